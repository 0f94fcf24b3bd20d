package cluster

// verified decodes the signed document value stored under key into doc,
// and says whether it verified; one that does not is ignored and reported
// (rejected).
func (c *Cluster) verified(key string, value []byte, doc any) bool {
	if _, err := c.seal.verify(key, value, doc); err != nil {
		c.rejected(key, err)
		return false
	}
	return true
}

// rejected reports a document that does not verify, once per key and
// reason: somebody without the cluster secret wrote it, or a host with
// another secret.
func (c *Cluster) rejected(key string, err error) {
	c.mu.Lock()
	if c.reported == nil {
		c.reported = map[string]string{}
	}
	seen := c.reported[key] == err.Error()
	c.reported[key] = err.Error()
	c.mu.Unlock()
	if !seen {
		c.log.Error("a document in etcd does not verify with the cluster key; ignored", "key", key, "err", err)
	}
}
