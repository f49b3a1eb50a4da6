package safestash

/*
#cgo CFLAGS: -I${SRCDIR}/../../crates/safestash-ffi/include
#cgo !safestash_release LDFLAGS: ${SRCDIR}/../../target/debug/libsafestash_ffi.a
#cgo safestash_release LDFLAGS: ${SRCDIR}/../../target/release/libsafestash_ffi.a
#cgo LDFLAGS: -lgcc_s -lutil -lrt -lpthread -lm -ldl
#include <stdlib.h>
#include "safestash.h"

// Defined in callback.go (exported to C).
extern int32_t safestashRestore(void *user_data, uint8_t *value, size_t value_len, uint8_t *meta, size_t meta_len);

static int32_t guard_rollback(const SsGuard *g, uintptr_t h, SsError *err) {
	return ss_guard_rollback(g, (SsRestoreFn)safestashRestore, (void *)h, err);
}

static int32_t op_rollback(const SsOperation *op, uintptr_t h, SsBytes *out, SsError *err) {
	return ss_op_rollback(op, (SsRestoreFn)safestashRestore, (void *)h, out, err);
}
*/
import "C"

import (
	"encoding/json"
	"fmt"
	"runtime/cgo"
	"unsafe"
)

// cstr is a C copy of s; free it with C.free.
func cstr(s string) *C.char { return C.CString(s) }

// optCstr is NULL for "", else a C copy of s.
func optCstr(s string) *C.char {
	if s == "" {
		return nil
	}
	return C.CString(s)
}

func free(p *C.char) {
	if p != nil {
		C.free(unsafe.Pointer(p))
	}
}

// bytesPtr points C at b's first byte (b is never empty: JSON text).
func bytesPtr(b []byte) *C.uint8_t { return (*C.uint8_t)(unsafe.Pointer(&b[0])) }

// takeBytes copies bytes the library allocated and frees them.
func takeBytes(b *C.SsBytes) []byte {
	if b.ptr == nil {
		return nil
	}
	out := C.GoBytes(unsafe.Pointer(b.ptr), C.int(b.len))
	C.ss_bytes_free(b)
	return out
}

// check turns a status code and its error object into a Go error (nil for
// SS_OK), freeing the object's strings.
func check(rc C.int32_t, e *C.SsError) error {
	if rc == C.SS_OK {
		return nil
	}
	err := &Error{Code: Code(rc)}
	if e.message != nil {
		err.Message = C.GoString(e.message)
	}
	if e.reason != nil {
		err.Reason = C.GoString(e.reason)
	}
	C.ss_error_free(e)
	return err
}

// marshal encodes v for stash key (what) with encoding/json.
func marshal(v any, what string) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, &Error{Code: CodeInvalidArgument, Message: fmt.Sprintf("failed to encode %s as JSON", what), cause: err}
	}
	return b, nil
}

// restoreCall carries a Go restore func through C to safestashRestore.
type restoreCall struct {
	fn  func(raw, meta []byte) error
	err error // what the func returned (or the panic it raised)
}

func callGuardRollback(g *C.SsGuard, fn func(raw, meta []byte) error) (*restoreCall, error) {
	call := &restoreCall{fn: fn}
	h := cgo.NewHandle(call)
	defer h.Delete()
	var e C.SsError
	rc := C.guard_rollback(g, C.uintptr_t(h), &e)
	return call, check(rc, &e)
}

func callOpRollback(op *C.SsOperation, fn func(raw, meta []byte) error) (*restoreCall, []byte, error) {
	call := &restoreCall{fn: fn}
	h := cgo.NewHandle(call)
	defer h.Delete()
	var e C.SsError
	var out C.SsBytes
	rc := C.op_rollback(op, C.uintptr_t(h), &out, &e)
	report := takeBytes(&out)
	return call, report, check(rc, &e)
}
