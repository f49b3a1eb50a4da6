package safestash

// #include <stdint.h>
// #include <stddef.h>
import "C"

import (
	"fmt"
	"runtime/cgo"
	"unsafe"
)

// safestashRestore is the C restore hook behind every Go restore func: it
// finds the func through the handle in user_data, calls it with copies of
// the value and metadata, and returns 0 when it succeeded. A panic in the
// func is recovered and reported as its error (it never unwinds into C).
//
//export safestashRestore
func safestashRestore(userData unsafe.Pointer, value *C.uint8_t, valueLen C.size_t, meta *C.uint8_t, metaLen C.size_t) (rc C.int32_t) {
	call := cgo.Handle(uintptr(userData)).Value().(*restoreCall)
	defer func() {
		if p := recover(); p != nil {
			call.err = fmt.Errorf("restore func panicked: %v", p)
			rc = 1
		}
	}()
	raw := C.GoBytes(unsafe.Pointer(value), C.int(valueLen))
	m := C.GoBytes(unsafe.Pointer(meta), C.int(metaLen))
	if err := call.fn(raw, m); err != nil {
		call.err = err
		return 1
	}
	return 0
}
