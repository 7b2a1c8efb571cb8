package upstream

import (
	"os/exec"
	"strings"
)

// moduleVersion is the version of a module in this module's build list.
func moduleVersion(path string) (string, bool) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", path).Output()
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(out)), true
}
