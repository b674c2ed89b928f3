// Command verify_tiles checks docs/vectors/tlog-tiles.json with Go's
// golang.org/x/mod/sumdb/tlog, the reference that outside verifiers run:
// its TileHashReader reads every hash of the vector tree through the
// vector's hash tiles and authenticates each tile against the tree's root
// (computed independently from the entries), so a wrong or misplaced tile
// fails here. Entry bundles are checked byte for byte (x/mod has no
// bundles: each entry is a 2-byte big-endian length and its bytes).
//
// Run (Debian: golang-go and golang-golang-x-mod-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go run docs/vectors/go/verify_tiles.go
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"golang.org/x/mod/sumdb/tlog"
)

type vectors struct {
	EntryTemplate string `json:"entry_template"`
	TreeSize      int64  `json:"tree_size"`
	Present       []struct {
		Path    string `json:"path"`
		Content string `json:"content"`
	} `json:"present"`
	Absent []string `json:"absent"`
}

type memory []tlog.Hash

func (m memory) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		out[i] = m[x]
	}
	return out, nil
}

// tiles serves the vector's hash tiles to TileHashReader; a tile it asks
// for that the vectors lack is a failure (the vectors must be complete).
type tiles struct {
	present map[string][]byte
	read    map[string]bool
}

func (t *tiles) Height() int { return 8 }

func (t *tiles) ReadTiles(list []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(list))
	for i, tile := range list {
		// Go names tiles "tile/8/L/N[.p/W]"; the vectors leave out "tile/8/".
		path := strings.TrimPrefix(tile.Path(), "tile/8/")
		data, ok := t.present[path]
		if !ok {
			return nil, fmt.Errorf("TileHashReader asked for tile %s, which the vectors lack", path)
		}
		t.read[path] = true
		out[i] = data
	}
	return out, nil
}

func (t *tiles) SaveTiles([]tlog.Tile, [][]byte) {}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	path := "docs/vectors/tlog-tiles.json"
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
	entry := func(i int64) []byte {
		return []byte(strings.ReplaceAll(v.EntryTemplate, "{i}", fmt.Sprint(i)))
	}
	var store memory
	for i := int64(0); i < v.TreeSize; i++ {
		hs, err := tlog.StoredHashes(i, entry(i), store)
		if err != nil {
			fail("%v", err)
		}
		store = append(store, hs...)
	}
	root, err := tlog.TreeHash(v.TreeSize, store)
	if err != nil {
		fail("%v", err)
	}
	t := &tiles{present: map[string][]byte{}, read: map[string]bool{}}
	bundles := map[string][]byte{}
	for _, p := range v.Present {
		content, err := base64.StdEncoding.DecodeString(p.Content)
		if err != nil {
			fail("%s: %v", p.Path, err)
		}
		if strings.HasPrefix(p.Path, "entries/") {
			bundles[p.Path] = content
		} else {
			t.present[p.Path] = content
		}
	}
	checks := 0
	reader := tlog.TileHashReader(tlog.Tree{N: v.TreeSize, Hash: root}, t)
	// Every stored hash of the tree, read and authenticated through tiles.
	indexes := make([]int64, len(store))
	for i := range indexes {
		indexes[i] = int64(i)
	}
	got, err := reader.ReadHashes(indexes)
	if err != nil {
		fail("TileHashReader: %v", err)
	}
	for i, x := range indexes {
		if got[i] != store[x] {
			fail("stored hash %d read through tiles differs", x)
		}
		checks++
	}
	treeHash, err := tlog.TreeHash(v.TreeSize, reader)
	if err != nil || treeHash != root {
		fail("tree hash through tiles: %v", err)
	}
	for _, index := range []int64{0, 1, 127, 255, 256} {
		proof, err := tlog.ProveRecord(v.TreeSize, index, reader)
		if err != nil {
			fail("ProveRecord(%d) through tiles: %v", index, err)
		}
		if err := tlog.CheckRecord(proof, v.TreeSize, root, index, tlog.RecordHash(entry(index))); err != nil {
			fail("inclusion of %d through tiles: %v", index, err)
		}
		checks++
	}
	for path := range t.present {
		if !t.read[path] {
			// TileHashReader reads the widest tile it needs; a narrower
			// partial tile of the same index must be a prefix of it.
			if !prefixOfRead(t, path) {
				fail("hash tile %s was neither read nor a prefix of a read tile", path)
			}
		}
		checks++
	}
	for path, content := range bundles {
		if err := checkBundle(path, content, entry); err != nil {
			fail("%s: %v", path, err)
		}
		checks++
	}
	for _, path := range v.Absent {
		if _, ok := t.present[path]; ok {
			fail("%s is both present and absent", path)
		}
	}
	fmt.Printf("tile vectors, Go sumdb/tlog TileHashReader: %d checks passed\n", checks)
}

func prefixOfRead(t *tiles, path string) bool {
	base := path
	if i := strings.Index(path, ".p/"); i >= 0 {
		base = path[:i]
	}
	for read := range t.read {
		if strings.HasPrefix(read, base) && bytes.HasPrefix(t.present[read], t.present[path]) {
			return true
		}
	}
	return false
}

// checkBundle compares an entry bundle with the entries it must hold:
// "entries/N[.p/W]" holds entries 256·N onwards, 256 or W of them.
func checkBundle(path string, content []byte, entry func(int64) []byte) error {
	var n, w int64 = 0, 256
	rest := strings.TrimPrefix(path, "entries/")
	if i := strings.Index(rest, ".p/"); i >= 0 {
		fmt.Sscan(rest[i+3:], &w)
		rest = rest[:i]
	}
	fmt.Sscan(rest, &n)
	var want []byte
	for i := int64(0); i < w; i++ {
		e := entry(n*256 + i)
		want = binary.BigEndian.AppendUint16(want, uint16(len(e)))
		want = append(want, e...)
	}
	if !bytes.Equal(content, want) {
		return fmt.Errorf("bundle differs from the entries")
	}
	return nil
}
