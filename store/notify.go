package store

// Changed returns a channel that is closed at the next change of any
// database's position or of the set of databases. Watchers (the replication
// stream, the events stream) wait on it and then read what they need; a
// closed channel never blocks, so no change between two reads is missed.
func (s *Store) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

func (s *Store) notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.notifyLocked()
}

func (s *Store) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}
