package safestash

import "errors"

// Code is the status code of a failed call, as the C ABI reports it
// (include/safestash.h, SS_ERR_*).
type Code int

// The codes an *Error carries.
const (
	CodeInvalidArgument    Code = 1  // a bad argument: a value that is not JSON, an invalid option, a nil func
	CodeInvalidKey         Code = 2  // the key is not a valid stash key
	CodeIO                 Code = 3  // a file system call failed
	CodeCorrupt            Code = 4  // a stash is damaged; Reason says how
	CodeUnsupportedVersion Code = 5  // a stash has a format version this build does not read
	CodeLocked             Code = 6  // the key is locked by another holder
	CodeStashExists        Code = 7  // a stash exists under the key; Begin never replaces one unseen
	CodeReplaced           Code = 8  // the stash is gone or not the one expected; nothing written
	CodeRestore            Code = 9  // the restore func failed; the stash is kept
	CodeBackend            Code = 10 // PostgreSQL or object storage failed or timed out (the outcome may be unknown)
	CodeValue              Code = 11 // a stored value could not be decoded
	CodeGuardDone          Code = 12 // the guard was already committed, rolled back or kept
	CodeConflict           Code = 13 // a journal update expected a generation that is no longer current
	CodeNotFound           Code = 14 // the journal operation does not exist
	CodeAlreadyExists      Code = 15 // the journal operation already exists
	CodeUndetermined       Code = 16 // a journal part is unreadable; nothing terminal is decided
	CodeJournal            Code = 17 // the journal refused the change
	CodeClosed             Code = 50 // the Store, Lock or Operation was closed
	CodePanic              Code = 98 // a panic inside the library, caught at the boundary
	CodeOther              Code = 99 // anything else
)

// Sentinel errors for errors.Is. Every error the package returns for a
// failed call is an *Error; errors.Is matches it against the sentinel of
// its Code.
var (
	// ErrCorrupt: a stash is damaged (a flipped byte, a truncation). It is
	// never reported as "not found"; Quarantine moves it aside.
	ErrCorrupt = errors.New("safestash: stash is corrupt")
	// ErrStashExists: Begin found a stash already there and wrote nothing.
	ErrStashExists = errors.New("safestash: stash already exists")
	// ErrInvalidKey: the key is not a valid stash key.
	ErrInvalidKey = errors.New("safestash: invalid key")
	// ErrLocked: the key is locked by another holder (also returned by Lock
	// when its context ends first).
	ErrLocked = errors.New("safestash: key is locked")
	// ErrReplaced: the stash is gone or no longer the one expected; nothing
	// was overwritten.
	ErrReplaced = errors.New("safestash: stash was replaced")
	// ErrClosed: the Store, Lock or Operation was closed.
	ErrClosed = errors.New("safestash: closed")
	// ErrGuardDone: the guard was already committed, rolled back or kept.
	ErrGuardDone = errors.New("safestash: guard already done")
	// ErrConflict: a journal update expected a generation that is no
	// longer current; re-read (View) and retry.
	ErrConflict = errors.New("safestash: journal conflict")
)

var sentinels = map[Code]error{
	CodeCorrupt:     ErrCorrupt,
	CodeStashExists: ErrStashExists,
	CodeInvalidKey:  ErrInvalidKey,
	CodeLocked:      ErrLocked,
	CodeReplaced:    ErrReplaced,
	CodeClosed:      ErrClosed,
	CodeGuardDone:   ErrGuardDone,
	CodeConflict:    ErrConflict,
}

// Error is the error of a failed call: the code, the message (what failed
// and why, with every cause), and for a damaged stash the reason. Use
// errors.As to get at it, errors.Is with a sentinel to test its kind.
type Error struct {
	Code    Code
	Message string
	// Reason is the damage of a corrupt stash (or an unreadable journal
	// part), in a few words; empty otherwise.
	Reason string
	cause  error
}

func (e *Error) Error() string {
	if e.cause != nil {
		return "safestash: " + e.Message + ": " + e.cause.Error()
	}
	return "safestash: " + e.Message
}

// Unwrap returns the Go error behind this one: what a restore func
// returned, a json error, a context's error.
func (e *Error) Unwrap() error { return e.cause }

// Is reports whether target is the sentinel of e's code.
func (e *Error) Is(target error) bool {
	s, ok := sentinels[e.Code]
	return ok && s == target
}

func closedErr(what string) error {
	return &Error{Code: CodeClosed, Message: what + " is closed"}
}
