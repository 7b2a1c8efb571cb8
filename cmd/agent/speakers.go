//go:build !delegated

package main

import (
	"fmt"

	"github.com/go-logr/logr"

	"github.com/anycast-operator/anycast-operator/internal/speaker"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bird"
	"github.com/anycast-operator/anycast-operator/internal/speaker/embedded"
)

// newSpeaker is the speaker of a backend. This is the whole agent; built with -tags delegated it has only the
// delegated backends (speakers_delegated.go).
func newSpeaker(backend string, o speakerOptions, log logr.Logger) (speaker.Speaker, error) {
	switch backend {
	case "embedded":
		return embedded.New(o.routerID, log), nil
	case "bird":
		return &bird.Speaker{Dir: o.birdDir, Socket: o.birdSocket, Log: log}, nil
	case "metallb", "calico", "cilium":
		return speaker.Delegated{}, nil
	}
	return nil, fmt.Errorf("--backend=%q: want embedded, bird, metallb, calico or cilium", backend)
}
