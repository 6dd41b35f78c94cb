package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/hyperfeed/hyperfeed/feed"
)

// feedInfo is what info shows; its JSON names are part of the command's
// interface.
type feedInfo struct {
	Key          feed.Key          `json:"key"`
	DiscoveryKey feed.DiscoveryKey `json:"discovery_key"`
	Writable     bool              `json:"writable"`
	Length       uint64            `json:"length"`
	Bytes        uint64            `json:"bytes"`
	Fork         uint64            `json:"fork"`
	Downloaded   uint64            `json:"downloaded"` // blocks held; Length on a complete feed
	TreeHash     string            `json:"tree_hash"`
	Signature    string            `json:"signature"` // "" when no head is signed yet
	DiskBytes    int64             `json:"disk_bytes"`
}

func cmdInfo(e *env, args []string) error {
	fs := e.flags()
	asJSON := fs.Bool("json", false, "print one JSON object")
	dir, f, err := e.openFeedOperand(fs, args)
	if err != nil {
		return err
	}
	defer f.Close()
	h := f.Head()
	disk, err := diskUsage(dir)
	if err != nil {
		return err
	}
	in := feedInfo{
		Key: f.Key(), DiscoveryKey: f.DiscoveryKey(), Writable: f.Writable(),
		Length: h.Length, Bytes: f.ByteLen(), Fork: h.Fork, Downloaded: f.Downloaded(),
		TreeHash: hex.EncodeToString(h.TreeHash[:]), Signature: hex.EncodeToString(h.Signature),
		DiskBytes: disk,
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(in)
	}
	kind := "replica (read-only)"
	if in.Writable {
		kind = "writable (this directory holds the secret key)"
	}
	sig := in.Signature
	switch {
	case sig != "":
	case in.Writable:
		sig = "none: nothing appended yet"
	default:
		sig = "none: no head received from a peer yet"
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "key\t%s\n", in.Key)
	fmt.Fprintf(tw, "discovery key\t%s\n", in.DiscoveryKey)
	fmt.Fprintf(tw, "kind\t%s\n", kind)
	fmt.Fprintf(tw, "length\t%d blocks\n", in.Length)
	fmt.Fprintf(tw, "bytes\t%d (%s)\n", in.Bytes, humanBytes(float64(in.Bytes)))
	fmt.Fprintf(tw, "fork\t%d\n", in.Fork)
	fmt.Fprintf(tw, "downloaded\t%d of %d blocks\n", in.Downloaded, in.Length)
	fmt.Fprintf(tw, "tree hash\t%s\n", in.TreeHash)
	fmt.Fprintf(tw, "signature\t%s\n", sig)
	fmt.Fprintf(tw, "disk\t%d bytes (%s)\n", in.DiskBytes, humanBytes(float64(in.DiskBytes)))
	return tw.Flush()
}

// diskUsage sums the space the files of dir take on disk, as du does: a
// replica's data file has holes where blocks are missing.
func diskUsage(dir string) (int64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, en := range entries {
		if !en.Type().IsRegular() {
			continue
		}
		st, err := os.Stat(filepath.Join(dir, en.Name()))
		if err != nil {
			return 0, err
		}
		total += allocated(st)
	}
	return total, nil
}
