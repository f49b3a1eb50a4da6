// The compliance pipeline: persist the scan result first, then notify the
// watcher. The watcher fails; the result stays, durable and verified,
// because a side effect cannot veto durability.
//
//	go run ./examples/compliance [DIR]
//
// Exits 0 when the scan result survived the failing watcher.
package main

import (
	"errors"
	"fmt"
	"log"
	"os"

	"safestash"
)

type ScanResult struct {
	Host     string   `json:"host"`
	Findings []string `json:"findings"`
	Passed   bool     `json:"passed"`
}

// notifyWatcher stands for the downstream watcher, which is down today.
func notifyWatcher(r ScanResult) error {
	return errors.New("watcher unavailable: connection refused")
}

// record persists first, then notifies: a notification failure is
// reported, never undoes or blocks the write.
func record(store *safestash.Store, key string, r ScanResult) (notifyErr error, err error) {
	if err := store.SaveWith(key, r, safestash.SaveOptions{Kind: "scan-result", Origin: "scan-job-17"}); err != nil {
		return nil, err // not durable: nothing to notify about
	}
	return notifyWatcher(r), nil
}

func main() {
	dir := ""
	if len(os.Args) > 1 {
		dir = os.Args[1]
	} else {
		d, err := os.MkdirTemp("", "compliance")
		if err != nil {
			log.Fatal(err)
		}
		defer os.RemoveAll(d)
		dir = d
	}
	store, err := safestash.Open(dir)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	result := ScanResult{Host: "db-7", Findings: []string{"CVE-2026-0001"}, Passed: false}
	notifyErr, err := record(store, "scan.db-7", result)
	if err != nil {
		log.Fatalf("persisting the scan result failed: %v", err)
	}
	fmt.Printf("watcher failed (reported, not fatal): %v\n", notifyErr)

	var back ScanResult
	found, err := store.Load("scan.db-7", &back)
	if err != nil || !found || back.Host != result.Host || len(back.Findings) != 1 {
		log.Fatalf("FAIL: the scan result did not survive the watcher: found=%v err=%v %+v", found, err, back)
	}
	fmt.Printf("OK: scan result for %s is stored (%d finding) although the watcher failed\n", back.Host, len(back.Findings))
}
