// Command verify_tlog checks docs/vectors/tlog-merkle.json with Go's
// golang.org/x/mod/sumdb/tlog, the reference implementation that outside
// verifiers run. It rebuilds the log with tlog.StoredHashes, then compares
// every root (TreeHash), inclusion proof (ProveRecord) and consistency proof
// (ProveTree) with the vectors, and checks each with CheckRecord/CheckTree.
//
// Run (Debian: golang-go and golang-golang-x-mod-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go run docs/vectors/go/verify_tlog.go
package main

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type vectors struct {
	EntryCount    int64  `json:"entry_count"`
	EntryTemplate string `json:"entry_template"`
	Roots         []struct {
		Size int64  `json:"size"`
		Root string `json:"root"`
	} `json:"roots"`
	Inclusion []struct {
		Index int64    `json:"index"`
		Size  int64    `json:"size"`
		Proof []string `json:"proof"`
	} `json:"inclusion"`
	Consistency []struct {
		From  int64    `json:"from"`
		To    int64    `json:"to"`
		Proof []string `json:"proof"`
	} `json:"consistency"`
	SignedCheckpoint struct {
		SeedHex string `json:"seed_hex"`
		Vkey    string `json:"vkey"`
		Note    string `json:"note"`
	} `json:"signed_checkpoint"`
}

type memory []tlog.Hash

func (m memory) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		out[i] = m[x]
	}
	return out, nil
}

func hashes(list []string) []tlog.Hash {
	out := []tlog.Hash{}
	for _, s := range list {
		h, err := tlog.ParseHash(s)
		if err != nil {
			fail("bad hash %q", s)
		}
		out = append(out, h)
	}
	return out
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	os.Exit(1)
}

func same(a, b []tlog.Hash) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func main() {
	path := "docs/vectors/tlog-merkle.json"
	if len(os.Args) > 1 {
		path = os.Args[1]
	}
	data, err := os.ReadFile(path)
	if err != nil {
		fail("%v", err)
	}
	var v vectors
	if err := json.Unmarshal(data, &v); err != nil {
		fail("%v", err)
	}
	var store memory
	for i := int64(0); i < v.EntryCount; i++ {
		entry := strings.ReplaceAll(v.EntryTemplate, "{i}", fmt.Sprint(i))
		hs, err := tlog.StoredHashes(i, []byte(entry), store)
		if err != nil {
			fail("%v", err)
		}
		store = append(store, hs...)
	}
	checks := 0
	roots := map[int64]tlog.Hash{}
	for _, r := range v.Roots {
		got, err := tlog.TreeHash(r.Size, store)
		if err != nil {
			fail("%v", err)
		}
		if r.Size == 0 {
			// Go defines the empty tree's hash as all zeros; RFC 9162
			// (and logbook) as SHA-256 of the empty string.
			if r.Root != "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=" {
				fail("empty root %s", r.Root)
			}
		} else if got.String() != r.Root {
			fail("root at size %d: go %s, vector %s", r.Size, got, r.Root)
		}
		roots[r.Size] = got
		checks++
	}
	root := func(n int64) tlog.Hash {
		h, err := tlog.TreeHash(n, store)
		if err != nil {
			fail("%v", err)
		}
		return h
	}
	for _, c := range v.Inclusion {
		proof, err := tlog.ProveRecord(c.Size, c.Index, store)
		if err != nil {
			fail("%v", err)
		}
		if !same(proof, hashes(c.Proof)) {
			fail("inclusion %d in %d differs from ProveRecord", c.Index, c.Size)
		}
		leaf := tlog.RecordHash([]byte(strings.ReplaceAll(v.EntryTemplate, "{i}", fmt.Sprint(c.Index))))
		if err := tlog.CheckRecord(hashes(c.Proof), c.Size, root(c.Size), c.Index, leaf); err != nil {
			fail("inclusion %d in %d: %v", c.Index, c.Size, err)
		}
		checks += 2
	}
	for _, c := range v.Consistency {
		if c.From == 0 || c.From == c.To {
			if len(c.Proof) != 0 {
				fail("consistency %d->%d must be empty", c.From, c.To)
			}
			checks++
			continue
		}
		proof, err := tlog.ProveTree(c.To, c.From, store)
		if err != nil {
			fail("%v", err)
		}
		if !same(proof, hashes(c.Proof)) {
			fail("consistency %d->%d differs from ProveTree", c.From, c.To)
		}
		if err := tlog.CheckTree(hashes(c.Proof), c.To, root(c.To), c.From, root(c.From)); err != nil {
			fail("consistency %d->%d: %v", c.From, c.To, err)
		}
		checks += 2
	}
	checks += checkNote(v, root(v.EntryCount))
	fmt.Printf("tlog vectors, Go sumdb/tlog and sumdb/note: %d checks passed\n", checks)
}

// checkNote verifies the signed checkpoint with sumdb/note, checks its text
// against the tree, and signs the same text with Go's signer built from the
// same seed: Ed25519 is deterministic, so the notes must be identical.
func checkNote(v vectors, treeRoot tlog.Hash) int {
	c := v.SignedCheckpoint
	verifier, err := note.NewVerifier(c.Vkey)
	if err != nil {
		fail("vkey: %v", err)
	}
	n, err := note.Open([]byte(c.Note), note.VerifierList(verifier))
	if err != nil {
		fail("note.Open: %v", err)
	}
	want := fmt.Sprintf("%s\n%d\n%s\n", verifier.Name(), v.EntryCount, treeRoot)
	if n.Text != want {
		fail("checkpoint text %q, want %q", n.Text, want)
	}
	seed, err := hex.DecodeString(c.SeedHex)
	if err != nil {
		fail("seed: %v", err)
	}
	key := append([]byte{1}, seed...)
	pub, _ := base64.StdEncoding.DecodeString(strings.SplitN(c.Vkey, "+", 3)[2])
	h := sha256.Sum256(append([]byte(verifier.Name()+"\n"), pub...))
	skey := fmt.Sprintf("PRIVATE+KEY+%s+%08x+%s", verifier.Name(), binary.BigEndian.Uint32(h[:4]),
		base64.StdEncoding.EncodeToString(key))
	signer, err := note.NewSigner(skey)
	if err != nil {
		fail("signer: %v", err)
	}
	signed, err := note.Sign(&note.Note{Text: n.Text}, signer)
	if err != nil {
		fail("sign: %v", err)
	}
	if string(signed) != c.Note {
		fail("Go signs the checkpoint as %q, the vector has %q", signed, c.Note)
	}
	// A flipped byte in the text must fail.
	tampered := strings.Replace(c.Note, "\n257\n", "\n258\n", 1)
	if _, err := note.Open([]byte(tampered), note.VerifierList(verifier)); err == nil {
		fail("a tampered checkpoint verified")
	}
	return 4
}
