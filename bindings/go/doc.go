// Package safestash stashes data durably before a destructive operation
// and restores it on rollback: the Go face of the safestash Rust crate,
// over its C ABI (crates/safestash-ffi). It never reimplements the format
// or the protocol: a stash written from Go is read by Rust, Python and the
// safestash CLI byte for byte, on every backend (a directory, PostgreSQL,
// object storage).
//
// Values cross as JSON (encoding/json); the JSON text is stored exactly as
// encoded. Every failed call returns an *Error (errors.As) whose kind the
// sentinels test (errors.Is(err, ErrCorrupt), ...). Store, Guard, Lock and
// Operation are safe for concurrent use by multiple goroutines.
//
// Building needs the C ABI built from the same checkout first:
//
//	cargo build -p safestash-ffi   # target/debug/libsafestash_ffi.a
//	go test ./...                  # in bindings/go
//
// (build with -tags safestash_release to link target/release instead).
package safestash
