package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

// The state directory keeps, on the node, the last NodeAnnouncement the agent acted on and the values of the Secrets
// it references (MD5 passwords, a provider's key), so that an agent restarted while the API server is unreachable
// resumes what it announced (fail-static across restarts). The file is the agent's own, mode 0600, like BIRD's
// peers.conf, which holds the same passwords.

const stateFile = "state.json"

// savedState is what the state directory holds.
type savedState struct {
	// NodeAnnouncement: metadata (name, generation), spec and the provisioning part of status.
	NodeAnnouncement *anycastv1.NodeAnnouncement `json:"nodeAnnouncement,omitempty"`
	// Secrets by name, only those the spec references.
	Secrets map[string]map[string][]byte `json:"secrets,omitempty"`
}

// loadState reads the state directory; a missing file is no state.
func loadState(dir string) (*savedState, error) {
	if dir == "" {
		return nil, nil
	}
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st savedState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, stateFile), err)
	}
	return &st, nil
}

// saveState replaces the state file atomically (a temporary file renamed over it).
func saveState(dir string, st *savedState) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// The init container hands an existing directory over as it is; its owner, the agent, sets the mode.
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+stateFile+".*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(b)
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr, os.Chmod(tmp.Name(), 0o600)); err != nil {
		_ = os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, stateFile)); err != nil {
		_ = os.Remove(tmp.Name())
		return err
	}
	return nil
}

// persistable is the part of a NodeAnnouncement worth keeping across restarts.
func persistable(na *anycastv1.NodeAnnouncement) *anycastv1.NodeAnnouncement {
	out := &anycastv1.NodeAnnouncement{}
	out.Name, out.UID, out.Generation = na.Name, na.UID, na.Generation
	out.Spec = *na.Spec.DeepCopy()
	out.Status.Provisioning = na.Status.DeepCopy().Provisioning
	return out
}
