// Package drain holds the signal a stopping front's handlers watch: a
// context that ends once draining begins.
package drain

import (
	"context"
	"sync"
)

// Signal is a context that ends when draining begins; its zero value is
// ready to use, and it is safe for concurrent use.
type Signal struct {
	once   sync.Once
	ctx    context.Context
	cancel context.CancelFunc
}

// Done is the context that ends when draining begins.
func (s *Signal) Done() context.Context {
	s.once.Do(func() { s.ctx, s.cancel = context.WithCancel(context.Background()) })
	return s.ctx
}

// Begin ends Done's context (again, harmlessly).
func (s *Signal) Begin() {
	s.Done()
	s.cancel()
}

// Began reports whether Begin was called.
func (s *Signal) Began() bool { return s.Done().Err() != nil }
