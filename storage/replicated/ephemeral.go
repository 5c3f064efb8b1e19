package replicated

import "xedge/storage"

// Ephemeral implements storage.Store. Rows live in a storage/ephemeral.Set
// tagged with this node's name and incarnation. Streaming them to peers
// (DESIGN.md decision 7) is not done here yet: reads return this node's rows.
func (s *Store) Ephemeral(name string) storage.Ephemeral { return s.eph.Table(name) }
