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

// Guard is the permit to destroy: proof that a snapshot is durably
// stashed. Commit it when the rebuild succeeded (the stash is cleared);
// Rollback it when the rebuild failed (the stash is restored through your
// func and cleared only if that succeeded). A guard that is dropped keeps
// its stash for the next attempt (see Resume). Safe for concurrent use;
// exactly one Commit, Rollback or Keep succeeds.
type Guard struct {
	mu   sync.Mutex
	h    *C.SsGuard
	key  string
	done string // why the guard is finished, once it is
}

func newGuard(h *C.SsGuard, key string) *Guard {
	g := &Guard{h: h, key: key}
	runtime.SetFinalizer(g, func(g *Guard) {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.release("dropped")
	})
	return g
}

// release frees the handle (g.mu held).
func (g *Guard) release(why string) {
	if g.h != nil {
		C.ss_guard_free(g.h)
		g.h = nil
		g.done = why
	}
}

// Key is the stash's key.
func (g *Guard) Key() string { return g.key }

func (g *Guard) use(f func(h *C.SsGuard) error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.h == nil {
		return &Error{Code: CodeGuardDone, Message: fmt.Sprintf("the guard of stash `%s` was already %s", g.key, g.done)}
	}
	return f(g.h)
}

// Begin stashes snapshot (encoded with encoding/json) under key, durably,
// and returns the permit to destroy it. It never replaces a stash the
// caller has not seen: with one already there it returns ErrStashExists
// and writes nothing (use Resume to decide about it).
func (s *Store) Begin(key string, snapshot any) (*Guard, error) {
	return s.BeginWith(key, snapshot, SaveOptions{})
}

// BeginWith is Begin with a kind and an origin.
func (s *Store) BeginWith(key string, snapshot any, opts SaveOptions) (*Guard, error) {
	b, err := marshal(snapshot, fmt.Sprintf("the snapshot for stash %q", key))
	if err != nil {
		return nil, err
	}
	var g *Guard
	err = s.use(func(h *C.SsStore) error {
		k, kind, origin := cstr(key), optCstr(opts.Kind), optCstr(opts.Origin)
		defer free(k)
		defer free(kind)
		defer free(origin)
		var e C.SsError
		var gh *C.SsGuard
		if err := check(C.ss_begin(h, k, bytesPtr(b), C.size_t(len(b)), kind, origin, &gh, &e), &e); err != nil {
			return err
		}
		g = newGuard(gh, key)
		return nil
	})
	return g, err
}

// Commit clears the stash (if it is still the one this guard wrote): the
// rebuild succeeded. A failed Commit leaves the guard usable for a retry;
// a second Commit returns ErrGuardDone.
func (g *Guard) Commit() error {
	return g.use(func(h *C.SsGuard) error {
		var e C.SsError
		var removed C.bool
		if err := check(C.ss_guard_commit(h, &removed, &e), &e); err != nil {
			return err
		}
		g.release("committed")
		return nil
	})
}

// Rollback loads and verifies the stash, calls restore with its JSON text
// (exactly as stored) to recreate the resource, and clears the stash only
// if restore returned nil. When restore fails (or panics), the stash and
// the guard stay for a retry, and the error wraps restore's error (and
// matches CodeRestore). A nil restore func is refused and nothing happens.
func (g *Guard) Rollback(restore func(raw []byte) error) error {
	if restore == nil {
		return &Error{Code: CodeInvalidArgument, Message: fmt.Sprintf("Rollback of stash `%s` needs a restore func, got nil; nothing was done", g.key)}
	}
	return g.use(func(h *C.SsGuard) error {
		call, err := callGuardRollback(h, func(raw, _ []byte) error { return restore(raw) })
		if err != nil {
			if e, ok := err.(*Error); ok && call.err != nil {
				e.cause = call.err
			}
			return err
		}
		g.release("rolled back")
		return nil
	})
}

// Keep keeps the stash on purpose (for an operator or a later attempt) and
// finishes the guard.
func (g *Guard) Keep() error {
	return g.use(func(h *C.SsGuard) error {
		var e C.SsError
		if err := check(C.ss_guard_keep(h, &e), &e); err != nil {
			return err
		}
		g.release("kept")
		return nil
	})
}

// LoadPolicy is what Resume requires of a stash before resuming it:
// MaxAge (0: any age) and Origin ("": any origin).
type LoadPolicy struct {
	MaxAge time.Duration
	Origin string
}

// ResumeOutcome is what Resume decided; the same four outcomes as Rust's
// safestash::Resume.
type ResumeOutcome int

const (
	// ResumeNothing: no live resource and no stash; nothing to protect.
	ResumeNothing ResumeOutcome = iota
	// ResumeLive: the live resource was stashed; Guard is the permit to
	// destroy it (Replaced: the earlier run's stash it replaced, if any).
	ResumeLive
	// ResumeStash: no live resource; the stash passed the policy; Guard is
	// over it: Rollback it onto the recreated resource.
	ResumeStash
	// ResumeRefused: no live resource; the stash failed the policy
	// (Verdict: stale, future or foreign) and is left untouched; no Guard.
	ResumeRefused
)

func (o ResumeOutcome) String() string {
	switch o {
	case ResumeNothing:
		return "nothing"
	case ResumeLive:
		return "live"
	case ResumeStash:
		return "stash"
	case ResumeRefused:
		return "refused"
	}
	return fmt.Sprintf("ResumeOutcome(%d)", int(o))
}

// Resumed is the decision of Resume.
type Resumed struct {
	Outcome  ResumeOutcome
	Guard    *Guard     // ResumeLive, ResumeStash
	Replaced *StashMeta // ResumeLive: the stash replaced, or nil
	Stash    *StashMeta // ResumeStash, ResumeRefused (for ResumeStash: key, digest, created, size, path)
	Verdict  string     // ResumeRefused: "stale", "future" or "foreign"
}

// Resume is the retry decision of a job that may be re-running after a
// crash. With live != nil (the resource still exists) it is stashed and
// the live resource wins; an earlier run's stash is replaced only because
// it was seen here. With live == nil a stash that passes policy is resumed
// (roll it back onto the recreated resource); one that fails it is
// refused and untouched; with no stash there is nothing to protect. A
// damaged stash is ErrCorrupt; a stash replaced by another worker between
// the look and the save is ErrReplaced (nothing is overwritten).
func (s *Store) Resume(key string, live any, opts SaveOptions, policy LoadPolicy) (*Resumed, error) {
	var b []byte
	if live != nil {
		var err error
		if b, err = marshal(live, fmt.Sprintf("the live value for stash %q", key)); err != nil {
			return nil, err
		}
	}
	var r *Resumed
	err := s.use(func(h *C.SsStore) error {
		k, kind, origin, porigin := cstr(key), optCstr(opts.Kind), optCstr(opts.Origin), optCstr(policy.Origin)
		defer free(k)
		defer free(kind)
		defer free(origin)
		defer free(porigin)
		var livePtr *C.uint8_t
		if b != nil {
			livePtr = bytesPtr(b)
		}
		maxAge := C.int64_t(-1)
		if policy.MaxAge > 0 {
			maxAge = C.int64_t(policy.MaxAge.Milliseconds())
		}
		var e C.SsError
		var outcome C.int32_t
		var gh *C.SsGuard
		var info C.SsBytes
		rc := C.ss_resume(h, k, livePtr, C.size_t(len(b)), kind, origin, maxAge, porigin, &outcome, &gh, &info, &e)
		if err := check(rc, &e); err != nil {
			return err
		}
		var details struct {
			Replaced *StashMeta `json:"replaced"`
			Stash    *StashMeta `json:"stash"`
			Verdict  string     `json:"verdict"`
		}
		if err := json.Unmarshal(takeBytes(&info), &details); err != nil {
			if gh != nil {
				C.ss_guard_free(gh)
			}
			return err
		}
		r = &Resumed{Outcome: ResumeOutcome(outcome), Replaced: details.Replaced, Stash: details.Stash, Verdict: details.Verdict}
		if gh != nil {
			r.Guard = newGuard(gh, key)
		}
		return nil
	})
	return r, err
}
