package safestash_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"safestash"
)

// exampleStore opens a store in a fresh directory.
func exampleStore() (*safestash.Store, func()) {
	dir, err := os.MkdirTemp("", "safestash-example")
	if err != nil {
		panic(err)
	}
	s, err := safestash.Open(dir)
	if err != nil {
		panic(err)
	}
	return s, func() { s.Close(); os.RemoveAll(dir) }
}

// Stash before you destroy; roll back when the rebuild fails.
func Example() {
	store, done := exampleStore()
	defer done()

	table := []string{"row 1", "row 2"}
	guard, err := store.Begin("orders", table) // durable now: the permit to destroy
	if err != nil {
		panic(err)
	}
	table = nil // destroy...
	rebuildFailed := true
	if rebuildFailed {
		err = guard.Rollback(func(raw []byte) error { return json.Unmarshal(raw, &table) })
	} else {
		err = guard.Commit()
	}
	fmt.Println(table, err)
	// Output: [row 1 row 2] <nil>
}

func ExampleOpen() {
	store, err := safestash.Open(os.TempDir()) // or "postgresql://...", "s3://bucket/prefix"
	if err != nil {
		panic(err)
	}
	defer store.Close()
	fmt.Println(store != nil)
	// Output: true
}

func ExampleStore_Save() {
	store, done := exampleStore()
	defer done()
	err := store.SaveWith("scan-42", map[string]int{"findings": 3}, safestash.SaveOptions{Kind: "scan", Origin: "job-42"})
	fmt.Println(err)
	var v map[string]int
	found, err := store.Load("scan-42", &v)
	fmt.Println(found, v["findings"], err)
	// Output:
	// <nil>
	// true 3 <nil>
}

func ExampleStore_Load() {
	store, done := exampleStore()
	defer done()
	var v []int
	found, err := store.Load("absent", &v)
	fmt.Println(found, err)
	// Output: false <nil>
}

func ExampleStore_Clear() {
	store, done := exampleStore()
	defer done()
	_ = store.Save("k", 1)
	removed, err := store.Clear("k")
	fmt.Println(removed, err)
	// Output: true <nil>
}

func ExampleStore_List() {
	store, done := exampleStore()
	defer done()
	_ = store.SaveWith("k", 1, safestash.SaveOptions{Kind: "counter"})
	infos, _ := store.List()
	fmt.Println(len(infos), infos[0].Key, infos[0].Kind)
	// Output: 1 k counter
}

func ExampleStore_Verify() {
	store, done := exampleStore()
	defer done()
	_ = store.Save("k", 1)
	reports, _ := store.Verify()
	fmt.Println(reports[0].Key, reports[0].OK)
	// Output: k true
}

func ExampleStore_Quarantine() {
	store, done := exampleStore()
	defer done()
	_ = store.Save("k", 1)
	path, err := store.Quarantine("k")
	fmt.Println(path != "", err)
	// Output: true <nil>
}

func ExampleStore_Begin() {
	store, done := exampleStore()
	defer done()
	guard, _ := store.Begin("t", []int{1, 2})
	_, err := store.Begin("t", []int{3}) // never replaces a stash unseen
	fmt.Println(errors.Is(err, safestash.ErrStashExists))
	fmt.Println(guard.Commit())
	fmt.Println(errors.Is(guard.Commit(), safestash.ErrGuardDone))
	// Output:
	// true
	// <nil>
	// true
}

func ExampleGuard_Rollback() {
	store, done := exampleStore()
	defer done()
	guard, _ := store.Begin("t", "snapshot")
	err := guard.Rollback(func(raw []byte) error { return errors.New("database is down") })
	fmt.Println(err != nil) // the stash and the guard stay for a retry
	err = guard.Rollback(func(raw []byte) error { fmt.Println(string(raw)); return nil })
	fmt.Println(err)
	// Output:
	// true
	// "snapshot"
	// <nil>
}

func ExampleStore_Resume() {
	store, done := exampleStore()
	defer done()
	opts := safestash.SaveOptions{Origin: "upload-7f3a"}
	policy := safestash.LoadPolicy{MaxAge: time.Hour, Origin: "upload-7f3a"}
	// A crashed run stashed the dictionary, then dropped the table.
	g, _ := store.BeginWith("dict", []string{"label"}, opts)
	_ = g.Keep()
	// The retry: no live table any more, so the stash is resumed.
	r, _ := store.Resume("dict", nil, opts, policy)
	fmt.Println(r.Outcome)
	_ = r.Guard.Rollback(func(raw []byte) error { fmt.Println(string(raw)); return nil })
	r, _ = store.Resume("dict", nil, opts, policy)
	fmt.Println(r.Outcome)
	// Output:
	// stash
	// ["label"]
	// nothing
}

func ExampleStore_Lock() {
	store, done := exampleStore()
	defer done()
	lock, _ := store.Lock(context.Background(), "job")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := store.Lock(ctx, "job") // held: gives up at the deadline
	fmt.Println(errors.Is(err, safestash.ErrLocked), errors.Is(err, context.DeadlineExceeded))
	fmt.Println(lock.Save([]int{1}), lock.Unlock())
	// Output:
	// true true
	// <nil> <nil>
}

func ExampleStore_CreateOperation() {
	store, done := exampleStore()
	defer done()
	op, _ := store.CreateOperation("apply-7", []string{"eu", "us"})
	v, _ := op.View()
	u, _ := op.Update("eu", safestash.ExpectOperation(v.Generation), safestash.Running, "")
	u, _ = op.Update("eu", safestash.ExpectOperation(u.Generation), safestash.Completed, "")
	fmt.Println(u.Aggregate, u.Terminal) // "us" has not finished
	_, err := op.Update("us", safestash.ExpectOperation(v.Generation), safestash.Running, "")
	fmt.Println(errors.Is(err, safestash.ErrConflict)) // a stale generation
	// Output:
	// running false
	// true
}

func ExampleError() {
	store, done := exampleStore()
	defer done()
	err := store.Save("../etc/passwd", 1)
	var e *safestash.Error
	fmt.Println(errors.As(err, &e), e.Code == safestash.CodeInvalidKey, errors.Is(err, safestash.ErrInvalidKey))
	// Output: true true true
}
