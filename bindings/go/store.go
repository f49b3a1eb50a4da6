package safestash

// #include <stdlib.h>
// #include "safestash.h"
import "C"

import (
	"encoding/json"
	"fmt"
	"runtime"
	"sync"
	"time"
)

// Store is an open stash store: a directory, a PostgreSQL database or an
// object storage prefix. It is safe for concurrent use by any number of
// goroutines; Close it when done.
type Store struct {
	mu  sync.RWMutex
	h   *C.SsStore
	url string
}

// SaveOptions label a stash: Kind (what it is, e.g. "rows") and Origin
// (which job or upload it belongs to, checked by Resume's policy). Empty
// means unset.
type SaveOptions struct {
	Kind   string
	Origin string
}

// StashMeta describes a stored stash.
type StashMeta struct {
	Key     string    `json:"key"`
	Kind    string    `json:"kind"`
	Origin  string    `json:"origin"`
	Created time.Time `json:"created"`
	Digest  string    `json:"digest"` // sha256 of the envelope, hex
	Size    uint64    `json:"size"`
	Path    string    `json:"path"`
}

// StashInfo is one entry of List: a stash and its header, or why the
// header could not be read (Err).
type StashInfo struct {
	Key     string    `json:"key"`
	Path    string    `json:"path"`
	Size    uint64    `json:"size"`
	Kind    string    `json:"kind"`
	Origin  string    `json:"origin"`
	Created time.Time `json:"created"`
	Err     *Error    `json:"-"`
	RawErr  *rawError `json:"error,omitempty"`
}

// VerifyReport is one entry of Verify: a stash, and Err when it is
// damaged or unreadable (errors.Is(Err, ErrCorrupt) for damage).
type VerifyReport struct {
	Key    string    `json:"key"`
	Path   string    `json:"path"`
	OK     bool      `json:"ok"`
	Err    *Error    `json:"-"`
	RawErr *rawError `json:"error,omitempty"`
}

type rawError struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	Reason  string `json:"reason"`
}

func (r *rawError) err() *Error {
	if r == nil {
		return nil
	}
	return &Error{Code: r.Code, Message: r.Message, Reason: r.Reason}
}

// Open opens the store at url: a directory path (it must exist),
// file://..., postgresql://..., s3://bucket/prefix, gs://, az://, or
// memory://. Remote URLs take the query parameters the Rust crate
// documents (timeout, lock_timeout, lease).
func Open(url string) (*Store, error) {
	c := cstr(url)
	defer free(c)
	var e C.SsError
	var h *C.SsStore
	if err := check(C.ss_store_open(c, &h, &e), &e); err != nil {
		return nil, err
	}
	s := &Store{h: h, url: url}
	runtime.SetFinalizer(s, func(s *Store) { _ = s.Close() })
	return s, nil
}

// Close releases the store. Calls on a closed store return ErrClosed;
// Guards, Locks and Operations taken from it stay usable. Closing twice
// is not an error.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.h != nil {
		C.ss_store_free(s.h)
		s.h = nil
	}
	return nil
}

// use runs f with the live handle, or returns ErrClosed.
func (s *Store) use(f func(h *C.SsStore) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.h == nil {
		return closedErr("store " + s.url)
	}
	return f(s.h)
}

// Save stashes v (encoded with encoding/json) under key, durably: when it
// returns nil, the stash survives a crash or power cut.
func (s *Store) Save(key string, v any) error {
	return s.SaveWith(key, v, SaveOptions{})
}

// SaveWith is Save with a kind and an origin.
func (s *Store) SaveWith(key string, v any, opts SaveOptions) error {
	b, err := marshal(v, fmt.Sprintf("the value for stash %q", key))
	if err != nil {
		return err
	}
	return s.use(func(h *C.SsStore) error {
		k, kind, origin := cstr(key), optCstr(opts.Kind), optCstr(opts.Origin)
		defer free(k)
		defer free(kind)
		defer free(origin)
		var e C.SsError
		return check(C.ss_save(h, k, bytesPtr(b), C.size_t(len(b)), kind, origin, &e), &e)
	})
}

// LoadRaw loads and verifies the stash of key and returns its JSON text
// exactly as stored, and its metadata; raw is nil when there is no stash.
// A damaged stash is ErrCorrupt, never "not found".
func (s *Store) LoadRaw(key string) (raw []byte, meta *StashMeta, err error) {
	err = s.use(func(h *C.SsStore) error {
		k := cstr(key)
		defer free(k)
		var e C.SsError
		var found C.bool
		var value, m C.SsBytes
		if err := check(C.ss_load(h, k, &found, &value, &m, &e), &e); err != nil {
			return err
		}
		if !found {
			return nil
		}
		raw = takeBytes(&value)
		meta = new(StashMeta)
		return json.Unmarshal(takeBytes(&m), meta)
	})
	return raw, meta, err
}

// Load loads and verifies the stash of key into v (with encoding/json).
// found is false when there is no stash. A damaged stash is ErrCorrupt,
// never "not found".
func (s *Store) Load(key string, v any) (found bool, err error) {
	raw, _, err := s.LoadRaw(key)
	if err != nil || raw == nil {
		return false, err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return true, &Error{Code: CodeValue, Message: fmt.Sprintf("failed to decode stash %q into %T", key, v), cause: err}
	}
	return true, nil
}

// Clear removes the stash of key and reports whether there was one.
func (s *Store) Clear(key string) (removed bool, err error) {
	err = s.use(func(h *C.SsStore) error {
		k := cstr(key)
		defer free(k)
		var e C.SsError
		var r C.bool
		err := check(C.ss_clear(h, k, &r, &e), &e)
		removed = bool(r)
		return err
	})
	return removed, err
}

func (s *Store) listJSON(verify bool, into any) error {
	return s.use(func(h *C.SsStore) error {
		var e C.SsError
		var out C.SsBytes
		var rc C.int32_t
		if verify {
			rc = C.ss_verify(h, &out, &e)
		} else {
			rc = C.ss_list(h, &out, &e)
		}
		if err := check(rc, &e); err != nil {
			return err
		}
		return json.Unmarshal(takeBytes(&out), into)
	})
}

// List returns every stash with its header (headers only are read).
func (s *Store) List() ([]StashInfo, error) {
	var infos []StashInfo
	if err := s.listJSON(false, &infos); err != nil {
		return nil, err
	}
	for i := range infos {
		infos[i].Err = infos[i].RawErr.err()
	}
	return infos, nil
}

// Verify reads and checks every stash in full; damaged ones have Err set.
func (s *Store) Verify() ([]VerifyReport, error) {
	var reports []VerifyReport
	if err := s.listJSON(true, &reports); err != nil {
		return nil, err
	}
	for i := range reports {
		reports[i].Err = reports[i].RawErr.err()
	}
	return reports, nil
}

// Quarantine moves the stash of key aside for inspection (it is never
// deleted) and returns where it went; "" when there was no stash.
func (s *Store) Quarantine(key string) (path string, err error) {
	err = s.use(func(h *C.SsStore) error {
		k := cstr(key)
		defer free(k)
		var e C.SsError
		var moved C.bool
		var p C.SsBytes
		if err := check(C.ss_quarantine(h, k, &moved, &p, &e), &e); err != nil {
			return err
		}
		path = string(takeBytes(&p))
		return nil
	})
	return path, err
}
