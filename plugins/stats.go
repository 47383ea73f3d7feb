package plugins

// MemoryBytes is the guest memory, in bytes, of the named plugin's current
// version: the sum of the memory sizes of its instances that are free at
// the moment of the call (an instance serving a call is not counted, since
// its memory may be growing). ok is false when no plugin has that name,
// the host is closed, or no instance was free.
//
// It is read-only but not free: it takes the free instances out of the
// pool for the time it takes to read their sizes, so a call arriving
// meanwhile waits that long for one. It is meant for benchmarks and
// diagnostics, not for the request path.
func (h *Host) MemoryBytes(plugin string) (total uint64, ok bool) {
	for _, pl := range h.plugins {
		if pl.spec.Name == plugin {
			return pl.memoryBytes()
		}
	}
	return 0, false
}

// memoryBytes sums the memory of the current version's free instances.
// Each one taken out of the channel goes back into it, nil slots of a
// retired version included; the channel holds one value per slot, so the
// sends never block.
func (pl *plugin) memoryBytes() (total uint64, ok bool) {
	v := pl.current.Load()
	if v == nil {
		return 0, false
	}
	held := make([]*instance, 0, v.size)
	defer func() {
		for _, in := range held {
			v.free <- in
		}
	}()
	for range v.size {
		select {
		case in := <-v.free:
			held = append(held, in)
			if in != nil {
				total += in.memSize()
				ok = true
			}
		default:
			return total, ok
		}
	}
	return total, ok
}
