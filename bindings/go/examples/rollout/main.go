// The rollout operator: one apply rolls out to three deployments, each a
// part of one journal operation. Two complete; the third's record becomes
// unreadable. The aggregate is derived from all parts and fails closed: it
// never goes terminal ("completed") while a sibling cannot be read.
//
//	go run ./examples/rollout
//
// Exits 0 when the aggregate stayed non-terminal.
package main

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	"safestash"
)

func main() {
	dir, err := os.MkdirTemp("", "rollout")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	store, err := safestash.Open(dir)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	parts := []string{"eu-west", "us-east", "ap-south"}
	op, err := store.CreateOperation("apply-7", parts)
	if err != nil {
		log.Fatal(err)
	}
	defer op.Close()

	// Every deployment starts; two finish.
	for _, p := range parts {
		v, err := op.View()
		if err != nil {
			log.Fatal(err)
		}
		if _, err := op.Update(p, safestash.ExpectOperation(v.Generation), safestash.Running, "applying"); err != nil {
			log.Fatal(err)
		}
	}
	for _, p := range parts[:2] {
		v, err := op.View()
		if err != nil {
			log.Fatal(err)
		}
		u, err := op.Update(p, safestash.ExpectOperation(v.Generation), safestash.Completed, "")
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s completed; aggregate %q (terminal %v)\n", p, u.Aggregate, u.Terminal)
		if u.Terminal {
			log.Fatalf("FAIL: terminal while a sibling still runs")
		}
	}

	// The third deployment's record is damaged (a bad disk, a partial copy).
	matches, _ := filepath.Glob(filepath.Join(dir, ".ns.journal", "op.apply-7.part.ap-south"))
	if len(matches) != 1 {
		log.Fatalf("part record of ap-south not found: %v", matches)
	}
	b, err := os.ReadFile(matches[0])
	if err != nil {
		log.Fatal(err)
	}
	b[len(b)-40] ^= 0x01
	if err := os.WriteFile(matches[0], b, 0o600); err != nil {
		log.Fatal(err)
	}

	v, err := op.View()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("ap-south unreadable: aggregate %q, terminal %v, undetermined %v, unreadable %v\n",
		v.Aggregate, v.Terminal, v.Undetermined, v.Unreadable)
	if v.Terminal || v.Aggregate == "completed" || !v.Undetermined {
		log.Fatalf("FAIL: the aggregate went terminal over an unreadable part")
	}
	// Nor can a completed sibling be moved to force a decision.
	if _, err := op.Update("eu-west", safestash.ExpectOperation(v.Generation), safestash.Failed, ""); err == nil {
		log.Fatalf("FAIL: a completed part was moved back")
	}
	fmt.Println("OK: the aggregate never went terminal")
}
