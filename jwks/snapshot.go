package jwks

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// snapshot is the on-disk form of an issuer's last good key set: the JWKS
// document as fetched, so that loading it runs the same ingest rules.
type snapshot struct {
	Issuer       string          `json:"issuer"`
	URI          string          `json:"uri"`
	FetchedAt    time.Time       `json:"fetched_at"`
	ETag         string          `json:"etag,omitempty"`
	LastModified string          `json:"last_modified,omitempty"`
	JWKS         json.RawMessage `json:"jwks"`
}

func (c *Cache) snapshotPath(is *issuer) string {
	h := sha256.Sum256([]byte(is.cfg.Issuer))
	return filepath.Join(c.opts.SnapshotDir, "jwks-"+hex.EncodeToString(h[:8])+".json")
}

// writeSnapshot stores set atomically: a temporary file in the same
// directory, fsync, rename, fsync of the directory. A failure is logged and
// changes nothing in memory. A retired issuer writes nothing: its file may
// already belong to the issuer that replaced it.
func (c *Cache) writeSnapshot(is *issuer, set *Set) {
	if c.opts.SnapshotDir == "" || set.raw == nil {
		return
	}
	is.snapMu.Lock()
	defer is.snapMu.Unlock()
	if is.retired.Load() {
		return
	}
	if err := c.saveSnapshot(is, set); err != nil {
		c.log.Warn("jwks snapshot not written", "issuer", is.cfg.Issuer, "err", err)
	}
}

func (c *Cache) saveSnapshot(is *issuer, set *Set) error {
	data, err := json.Marshal(snapshot{
		Issuer: is.cfg.Issuer, URI: set.URI, FetchedAt: set.FetchedAt.UTC(),
		ETag: set.ETag, LastModified: set.LastModified, JWKS: set.raw,
	})
	if err != nil {
		return err
	}
	path := c.snapshotPath(is)
	tmp, err := os.CreateTemp(c.opts.SnapshotDir, ".jwks-*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if dir, err := os.Open(c.opts.SnapshotDir); err == nil {
		dir.Sync()
		dir.Close()
	}
	return nil
}

// loadSnapshot installs the issuer's snapshot when it is younger than
// MaxStale and passes the ingest rules; anything else is ignored with a
// warning, and the first fetch decides.
func (c *Cache) loadSnapshot(is *issuer) {
	path := c.snapshotPath(is)
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return
	}
	set, err := c.parseSnapshot(is, data)
	if err != nil {
		c.log.Warn("jwks snapshot ignored", "issuer", is.cfg.Issuer, "path", path, "err", err)
		return
	}
	is.set.Store(set)
	c.log.Info("jwks snapshot loaded", "issuer", is.cfg.Issuer, "keys", len(set.Keys), "fetched_at", set.FetchedAt)
}

func (c *Cache) parseSnapshot(is *issuer, data []byte) (*Set, error) {
	var snap snapshot
	if err := json.Unmarshal(data, &snap); err != nil {
		return nil, fmt.Errorf("corrupt: %w", err)
	}
	if snap.Issuer != is.cfg.Issuer {
		return nil, fmt.Errorf("it is for issuer %q", snap.Issuer)
	}
	if age := c.opts.Now().Sub(snap.FetchedAt); age > c.opts.MaxStale || age < -time.Hour {
		return nil, fmt.Errorf("fetched %s, outside max_stale %s", snap.FetchedAt, c.opts.MaxStale)
	}
	if !is.cfg.Discovery && snap.URI != is.cfg.JWKSURI {
		return nil, fmt.Errorf("it is from %s, not the configured jwks_uri", snap.URI)
	}
	if err := CheckURL(snap.URI, is.cfg.InsecureHTTP); err != nil {
		return nil, err
	}
	set, _, err := parseSet(snap.JWKS, c.opts.MaxKeys)
	if err != nil {
		return nil, err
	}
	set.FetchedAt, set.URI, set.ETag, set.LastModified = snap.FetchedAt, snap.URI, snap.ETag, snap.LastModified
	if is.cfg.Discovery {
		uri := snap.URI
		is.jwksURI.Store(&uri)
	}
	return set, nil
}
