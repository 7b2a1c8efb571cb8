//go:build delegated

package main

import (
	"fmt"

	"github.com/go-logr/logr"

	"github.com/anycast-operator/anycast-operator/internal/speaker"
)

// newSpeaker is the speaker of a delegated backend: the agent built with -tags delegated (the agent-delegated
// image) links no BGP code at all, for clusters whose BGP stack (MetalLB, Calico, Cilium) announces. It is about
// 1 MB lighter (docs/performance.md).
func newSpeaker(backend string, _ speakerOptions, _ logr.Logger) (speaker.Speaker, error) {
	switch backend {
	case "metallb", "calico", "cilium":
		return speaker.Delegated{}, nil
	case "embedded", "bird":
		return nil, fmt.Errorf("--backend=%s: this agent is built for the delegated backends only (metallb, calico, cilium); use the agent image (embedded) or agent-bird (bird)", backend)
	}
	return nil, fmt.Errorf("--backend=%q: want metallb, calico or cilium (this agent is built for the delegated backends only)", backend)
}
