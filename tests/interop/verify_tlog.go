// An independent RFC 6962 check of the ledger's log with Go's golang.org/x/mod/sumdb
// (note and tlog): the checkpoint signature, leaf hashing, an inclusion proof and a
// consistency proof, all from what the ledger's endpoints served.
//
// Input (JSON on stdin): {"vkey", "checkpoint", "old_checkpoint", "entry", "index",
// "inclusion": [b64], "consistency": [b64]}. Prints "ok" or exits 1 with the failure.
package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type input struct {
	Vkey          string   `json:"vkey"`
	Checkpoint    string   `json:"checkpoint"`
	OldCheckpoint string   `json:"old_checkpoint"`
	Entry         string   `json:"entry"`
	Index         int64    `json:"index"`
	Inclusion     []string `json:"inclusion"`
	Consistency   []string `json:"consistency"`
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func open(text string, verifiers note.Verifiers) (int64, tlog.Hash) {
	n, err := note.Open([]byte(text), verifiers)
	if err != nil {
		fail("checkpoint signature: %v", err)
	}
	lines := strings.Split(n.Text, "\n")
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		fail("checkpoint size: %v", err)
	}
	raw, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(raw) != tlog.HashSize {
		fail("checkpoint root")
	}
	var root tlog.Hash
	copy(root[:], raw)
	return size, root
}

func hashes(items []string) []tlog.Hash {
	out := make([]tlog.Hash, len(items))
	for i, item := range items {
		raw, err := base64.StdEncoding.DecodeString(item)
		if err != nil || len(raw) != tlog.HashSize {
			fail("proof hash %d", i)
		}
		copy(out[i][:], raw)
	}
	return out
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fail("input: %v", err)
	}
	verifier, err := note.NewVerifier(strings.TrimSpace(in.Vkey))
	if err != nil {
		fail("verifier key: %v", err)
	}
	verifiers := note.VerifierList(verifier)
	size, root := open(in.Checkpoint, verifiers)
	oldSize, oldRoot := open(in.OldCheckpoint, verifiers)
	entry, err := base64.StdEncoding.DecodeString(in.Entry)
	if err != nil {
		fail("entry: %v", err)
	}
	leaf := tlog.RecordHash(entry)
	if err := tlog.CheckRecord(hashes(in.Inclusion), size, root, in.Index, leaf); err != nil {
		fail("inclusion proof: %v", err)
	}
	if err := tlog.CheckTree(hashes(in.Consistency), size, root, oldSize, oldRoot); err != nil {
		fail("consistency proof: %v", err)
	}
	fmt.Println("ok")
}
