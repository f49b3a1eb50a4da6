package safestash

// #include <stdlib.h>
// #include "safestash.h"
import "C"

import (
	"encoding/json"
	"fmt"
	"runtime"
	"sync"
)

// PartState is the state of one part of a journal operation.
type PartState string

// The part states.
const (
	Pending         PartState = "pending"
	Running         PartState = "running"
	Completed       PartState = "completed"
	Failed          PartState = "failed"
	FailedRetryable PartState = "failed_retryable"
	Cancelled       PartState = "cancelled"
	RolledBack      PartState = "rolled_back"
	RollbackFailed  PartState = "rollback_failed"
)

// Expect is the compare-and-swap of a journal change: the generation the
// caller last saw, of the whole operation (ExpectOperation) or of the part
// (ExpectPart). A change made since is ErrConflict, and nothing changes.
type Expect struct {
	Part       bool
	Generation uint64
}

// ExpectOperation expects the operation's generation to still be g.
func ExpectOperation(g uint64) Expect { return Expect{Generation: g} }

// ExpectPart expects the part's own generation to still be g.
func ExpectPart(g uint64) Expect { return Expect{Part: true, Generation: g} }

// Unreadable is a part whose record cannot be read.
type Unreadable struct {
	Part   string `json:"part"`
	Reason string `json:"reason"`
}

// Derived is the aggregate derived from all parts. It is never terminal
// while a part is active or unreadable: with unreadable parts Aggregate is
// "" unless every possibility agrees on a non-terminal state.
type Derived struct {
	Aggregate    string       `json:"aggregate"`
	Terminal     bool         `json:"terminal"`
	Undetermined bool         `json:"undetermined"`
	Unreadable   []Unreadable `json:"unreadable"`
	Possible     []string     `json:"possible"`
}

// PartInfo is one part as last recorded; Unreadable is set (and the rest
// empty) when its record cannot be read.
type PartInfo struct {
	Name       string    `json:"name"`
	State      PartState `json:"state"`
	Generation uint64    `json:"generation"`
	HoldsStash bool      `json:"holds_stash"`
	Updates    uint64    `json:"updates"`
	Note       string    `json:"note"`
	Unreadable string    `json:"unreadable"`
}

// OperationView is an operation read whole: its generation, the aggregate
// last stored, the aggregate derived from all parts, and the parts.
type OperationView struct {
	Derived
	ID         string     `json:"id"`
	Generation uint64     `json:"generation"`
	Stored     string     `json:"stored"`
	Parts      []PartInfo `json:"parts"`
}

// Updated is the result of a change: the new operation generation, the
// part as written, and the aggregate derived afterwards.
type Updated struct {
	Derived
	Generation uint64   `json:"generation"`
	Stored     string   `json:"stored"`
	Part       PartInfo `json:"part"`
}

// PartRollback is what a rollback did to one part: Outcome is cancelled,
// abandoned, restored, nothing_to_restore, restore_failed or
// not_attempted.
type PartRollback struct {
	Part    string `json:"part"`
	Outcome string `json:"outcome"`
	Error   string `json:"error"`
}

// RollbackReport is what Operation.Rollback did.
type RollbackReport struct {
	Derived
	Op         string         `json:"op"`
	Generation uint64         `json:"generation"`
	Outcomes   []PartRollback `json:"outcomes"`
	Unrestored []string       `json:"unrestored"`
}

// Operation is one multi-part operation of the journal (a rollout of
// several deployments, a reload of several tables): its aggregate state
// is derived from all of its parts and fails closed. Safe for concurrent
// use; every change is a compare-and-swap on a generation.
type Operation struct {
	mu sync.RWMutex
	h  *C.SsOperation
	id string
}

func newOperation(h *C.SsOperation, id string) *Operation {
	o := &Operation{h: h, id: id}
	runtime.SetFinalizer(o, func(o *Operation) { _ = o.Close() })
	return o
}

// CreateOperation creates the operation id with these parts, all pending.
// An existing id is an error (CodeAlreadyExists).
func (s *Store) CreateOperation(id string, parts []string) (*Operation, error) {
	pj, err := json.Marshal(parts)
	if err != nil {
		return nil, err
	}
	var o *Operation
	err = s.use(func(h *C.SsStore) error {
		cid, cparts := cstr(id), cstr(string(pj))
		defer free(cid)
		defer free(cparts)
		var e C.SsError
		var oh *C.SsOperation
		if err := check(C.ss_op_create(h, cid, cparts, &oh, &e), &e); err != nil {
			return err
		}
		o = newOperation(oh, id)
		return nil
	})
	return o, err
}

// OpenOperation opens the existing operation id (CodeNotFound if none).
func (s *Store) OpenOperation(id string) (*Operation, error) {
	var o *Operation
	err := s.use(func(h *C.SsStore) error {
		cid := cstr(id)
		defer free(cid)
		var e C.SsError
		var oh *C.SsOperation
		if err := check(C.ss_op_open(h, cid, &oh, &e), &e); err != nil {
			return err
		}
		o = newOperation(oh, id)
		return nil
	})
	return o, err
}

// ID is the operation's id.
func (o *Operation) ID() string { return o.id }

func (o *Operation) use(f func(h *C.SsOperation) error) error {
	o.mu.RLock()
	defer o.mu.RUnlock()
	if o.h == nil {
		return closedErr("operation `" + o.id + "`")
	}
	return f(o.h)
}

// Close releases the handle (the operation stays in the store).
func (o *Operation) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.h != nil {
		C.ss_op_free(o.h)
		o.h = nil
	}
	return nil
}

// View reads every part and derives the aggregate from all of them.
func (o *Operation) View() (*OperationView, error) {
	var v OperationView
	err := o.use(func(h *C.SsOperation) error {
		var e C.SsError
		var out C.SsBytes
		if err := check(C.ss_op_view(h, &out, &e), &e); err != nil {
			return err
		}
		return json.Unmarshal(takeBytes(&out), &v)
	})
	if err != nil {
		return nil, err
	}
	return &v, nil
}

// Update moves part to state, with an optional note, if expect still
// holds (else ErrConflict, nothing changes).
func (o *Operation) Update(part string, expect Expect, state PartState, note string) (*Updated, error) {
	var u Updated
	err := o.use(func(h *C.SsOperation) error {
		cpart, cstate, cnote := cstr(part), cstr(string(state)), optCstr(note)
		defer free(cpart)
		defer free(cstate)
		defer free(cnote)
		var e C.SsError
		var out C.SsBytes
		rc := C.ss_op_update(h, cpart, expectKind(expect), C.uint64_t(expect.Generation), cstate, cnote, &out, &e)
		if err := check(rc, &e); err != nil {
			return err
		}
		return json.Unmarshal(takeBytes(&out), &u)
	})
	if err != nil {
		return nil, err
	}
	return &u, nil
}

// Stash durably stashes v for part (a running part, before it destroys
// anything), if expect still holds. Rollback restores it.
func (o *Operation) Stash(part string, expect Expect, v any) (*Updated, error) {
	b, err := marshal(v, fmt.Sprintf("the stash of part %q", part))
	if err != nil {
		return nil, err
	}
	var u Updated
	err = o.use(func(h *C.SsOperation) error {
		cpart := cstr(part)
		defer free(cpart)
		var e C.SsError
		var out C.SsBytes
		rc := C.ss_op_stash(h, cpart, expectKind(expect), C.uint64_t(expect.Generation), bytesPtr(b), C.size_t(len(b)), &out, &e)
		if err := check(rc, &e); err != nil {
			return err
		}
		return json.Unmarshal(takeBytes(&out), &u)
	})
	if err != nil {
		return nil, err
	}
	return &u, nil
}

// Rollback rolls the operation back: pending parts are cancelled,
// retryable ones failed, and each part's stash is handed to restore (with
// the part's name) and cleared only if restore returned nil. Refused while
// a part runs or is unreadable. When a restore fails the error wraps it
// and the operation stays non-terminal.
func (o *Operation) Rollback(restore func(part string, raw []byte) error) (*RollbackReport, error) {
	if restore == nil {
		return nil, &Error{Code: CodeInvalidArgument, Message: fmt.Sprintf("Rollback of operation `%s` needs a restore func, got nil; nothing was done", o.id)}
	}
	var r RollbackReport
	err := o.use(func(h *C.SsOperation) error {
		call, out, err := callOpRollback(h, func(raw, meta []byte) error {
			var m StashMeta
			if err := json.Unmarshal(meta, &m); err != nil {
				return err
			}
			return restore(m.Origin, raw)
		})
		if err != nil {
			if e, ok := err.(*Error); ok && call.err != nil {
				e.cause = call.err
			}
			return err
		}
		return json.Unmarshal(out, &r)
	})
	if err != nil {
		return nil, err
	}
	return &r, nil
}

func expectKind(e Expect) C.int32_t {
	if e.Part {
		return C.SS_EXPECT_PART
	}
	return C.SS_EXPECT_OPERATION
}
