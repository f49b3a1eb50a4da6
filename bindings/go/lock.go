package safestash

// #include <stdlib.h>
// #include "safestash.h"
import "C"

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"
)

// Lock is a held lock on one key: no other holder (goroutine, process or
// host) can save or clear the key until Unlock. Write the key through the
// Lock's own Save and Clear while holding it: a Store.Save of the same key
// waits for this very lock. Safe for concurrent use.
type Lock struct {
	mu  sync.Mutex
	h   *C.SsLock
	key string
}

// Lock takes the lock of key, waiting while another holder has it, until
// ctx is done: then it returns an error that matches both ErrLocked and
// ctx.Err() (context.DeadlineExceeded or context.Canceled).
func (s *Store) Lock(ctx context.Context, key string) (*Lock, error) {
	pause := time.Millisecond
	for {
		if err := ctx.Err(); err != nil {
			return nil, &Error{Code: CodeLocked, Message: fmt.Sprintf("gave up waiting for the lock of stash `%s`", key), cause: err}
		}
		var lh *C.SsLock
		err := s.use(func(h *C.SsStore) error {
			k := cstr(key)
			defer free(k)
			var e C.SsError
			return check(C.ss_lock(h, k, 0, &lh, &e), &e)
		})
		if err == nil {
			l := &Lock{h: lh, key: key}
			runtime.SetFinalizer(l, func(l *Lock) { _ = l.Unlock() })
			return l, nil
		}
		if !errors.Is(err, ErrLocked) {
			return nil, err
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, &Error{Code: CodeLocked, Message: fmt.Sprintf("gave up waiting for the lock of stash `%s`", key), cause: ctx.Err()}
		case <-t.C:
		}
		if pause < 50*time.Millisecond {
			pause *= 2
		}
	}
}

func (l *Lock) use(f func(h *C.SsLock) error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.h == nil {
		return closedErr("the lock of stash `" + l.key + "`")
	}
	return f(l.h)
}

// Key is the locked key.
func (l *Lock) Key() string { return l.key }

// Save stashes v under the locked key, durably, through the lock.
func (l *Lock) Save(v any) error { return l.SaveWith(v, SaveOptions{}) }

// SaveWith is Save with a kind and an origin.
func (l *Lock) SaveWith(v any, opts SaveOptions) error {
	b, err := marshal(v, fmt.Sprintf("the value for stash %q", l.key))
	if err != nil {
		return err
	}
	return l.use(func(h *C.SsLock) error {
		kind, origin := optCstr(opts.Kind), optCstr(opts.Origin)
		defer free(kind)
		defer free(origin)
		var e C.SsError
		return check(C.ss_lock_save(h, bytesPtr(b), C.size_t(len(b)), kind, origin, &e), &e)
	})
}

// Clear removes the locked key's stash, through the lock.
func (l *Lock) Clear() (removed bool, err error) {
	err = l.use(func(h *C.SsLock) error {
		var e C.SsError
		var r C.bool
		err := check(C.ss_lock_clear(h, &r, &e), &e)
		removed = bool(r)
		return err
	})
	return removed, err
}

// Unlock releases the lock. Unlocking twice is not an error.
func (l *Lock) Unlock() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.h != nil {
		C.ss_lock_free(l.h)
		l.h = nil
	}
	return nil
}
