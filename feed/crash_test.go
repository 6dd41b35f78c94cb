package feed_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/stretchr/testify/require"
)

// The crash test runs this test binary again as a child that appends to a
// feed in a loop and prints every acknowledged length; the parent kills it
// with SIGKILL and checks what the feed holds.
const (
	crashDirEnv  = "HYPERFEED_CRASH_DIR"
	crashSeedEnv = "HYPERFEED_CRASH_SEED"
	crashSyncEnv = "HYPERFEED_CRASH_SYNC"
)

func crashBlock(i uint64) []byte {
	return append([]byte(fmt.Sprintf("crash block %d;", i)), bytes.Repeat([]byte{byte(i)}, int(i*7%300))...)
}

// runCrashChild is the child's main: it reports true if this process is a
// child, after it ran (it only ends by being killed, or on error).
func runCrashChild() bool {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		return false
	}
	seed, err := hex.DecodeString(os.Getenv(crashSeedEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	f, err := feed.Open(dir, &feed.Options{SecretKey: ed25519.NewKeyFromSeed(seed), Sync: os.Getenv(crashSyncEnv) != ""})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	rng := rand.New(rand.NewPCG(uint64(os.Getpid()), 0))
	out := bufio.NewWriter(os.Stdout)
	for {
		n := f.Len()
		batch := make([][]byte, 1+rng.IntN(20))
		for i := range batch {
			batch[i] = crashBlock(n + uint64(i))
		}
		length, err := f.Append(batch...)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Fprintln(out, length)
		out.Flush()
	}
}

func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes; skipped in -short")
	}
	trials := 50
	for _, sync := range []bool{false, true} {
		t.Run(fmt.Sprintf("sync=%v", sync), func(t *testing.T) {
			n := trials
			if sync {
				n = 10
			}
			crashTrials(t, n, sync)
		})
	}
}

func crashTrials(t *testing.T, trials int, sync bool) {
	dir := t.TempDir()
	seed := bytes.Repeat([]byte{0x5e}, ed25519.SeedSize)
	rng := rand.New(rand.NewPCG(42, uint64(trials)))
	var acked uint64
	for trial := range trials {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashSeedEnv+"="+hex.EncodeToString(seed))
		if sync {
			cmd.Env = append(cmd.Env, crashSyncEnv+"=1")
		}
		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		require.NoError(t, cmd.Start())
		// Kill after a random number of acknowledgements, sometimes none, so
		// the kill lands anywhere in open, append or commit.
		killAfter := rng.IntN(60)
		sc := bufio.NewScanner(stdout)
		for seen := 0; seen < killAfter && sc.Scan(); seen++ {
			n, err := strconv.ParseUint(sc.Text(), 10, 64)
			require.NoError(t, err)
			acked = max(acked, n)
		}
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		// Lengths printed before the kill landed were acknowledged too.
		for sc.Scan() {
			if n, err := strconv.ParseUint(sc.Text(), 10, 64); err == nil {
				acked = max(acked, n)
			}
		}
		err = cmd.Wait()
		require.Error(t, err, "child exited by itself: %s", stderr.String())
		require.Empty(t, stderr.String())

		f, err := feed.Open(dir, &feed.Options{SecretKey: ed25519.NewKeyFromSeed(seed)})
		require.NoError(t, err, "trial %d", trial)
		require.GreaterOrEqual(t, f.Len(), acked, "trial %d: acknowledged blocks lost", trial)
		require.NoError(t, f.Verify(context.Background()), "trial %d", trial)
		for i := range f.Len() {
			b, err := f.Get(context.Background(), i)
			require.NoError(t, err)
			require.Equal(t, crashBlock(i), b, "trial %d block %d", trial, i)
		}
		acked = f.Len()
		require.NoError(t, f.Close())
	}
	t.Logf("%d kills, feed ended at %d blocks", trials, acked)
}
