package discovery

import (
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
)

// gossipKeyLabel separates the gossip key from every other key derived from the
// cluster key (the raft/bus TLS identity uses its own label in storage/replicated).
const gossipKeyLabel = "xedge/discovery serf keyring v1"

// GossipKey derives the 32-byte AES-256 key that encrypts and authenticates Serf
// gossip from the cluster key (HKDF-SHA256). Every node with the same cluster key
// derives the same gossip key; a node with another key cannot decrypt gossip and
// is refused.
func GossipKey(clusterKey []byte) ([]byte, error) {
	if len(clusterKey) < 16 {
		return nil, fmt.Errorf("discovery: cluster key is %d bytes, need at least 16", len(clusterKey))
	}
	k, err := hkdf.Key(sha256.New, clusterKey, []byte("xedge cluster gossip"), gossipKeyLabel, 32)
	if err != nil {
		return nil, fmt.Errorf("discovery: derive gossip key: %w", err)
	}
	return k, nil
}
