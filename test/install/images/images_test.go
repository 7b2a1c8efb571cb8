package images

import (
	"archive/tar"
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// dockerfileStage is what a stage of the Dockerfile sets for the image it makes.
type dockerfileStage struct {
	from, copyTo, user string
	entrypoint, expose []string
}

// finalStage parses the Dockerfile's last stage (the distroless image of the manager and the agent).
func finalStage(t *testing.T) dockerfileStage {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st dockerfileStage
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		switch strings.ToUpper(fields[0]) {
		case "FROM":
			st = dockerfileStage{from: fields[1]}
		case "COPY":
			st.copyTo = fields[len(fields)-1]
		case "USER":
			st.user = fields[1]
		case "EXPOSE":
			st.expose = append(st.expose, fields[1:]...)
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(strings.TrimSpace(strings.TrimPrefix(sc.Text(), fields[0]))), &st.entrypoint); err != nil {
				t.Fatalf("ENTRYPOINT %q: %v", sc.Text(), err)
			}
		}
	}
	if st.from != "gcr.io/distroless/static-debian12:nonroot" {
		t.Fatalf("the Dockerfile's last stage is FROM %s: this test and package images describe distroless static-debian12:nonroot", st.from)
	}
	return st
}

// TestImagesAgreeWithDockerfile builds an image with Write from a static binary and checks it against the
// Dockerfile's final stage and the distroless base: the same entrypoint, user and ports, the binary where the
// Dockerfile copies it, the nonroot user known to /etc/passwd, a writable /tmp; and that the archive loads as an image
// under its tag, as `ctr images import` and `docker load` read it.
func TestImagesAgreeWithDockerfile(t *testing.T) {
	st := finalStage(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	if err := os.WriteFile(src, []byte("package main\n\nfunc main() { println(\"hello from the image\") }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "app")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, src)
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	certs := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(certs, []byte("-----BEGIN CERTIFICATE-----\ntest\n-----END CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(dir, "image.tar")
	const ref = "ghcr.io/anycast-operator/manager:test"
	if err := Write(archive, Spec{Tag: ref, Binary: bin, CACerts: certs}); err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(archive, &tag)
	if err != nil {
		t.Fatalf("the archive does not load as %s: %v", ref, err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Config.Entrypoint, st.entrypoint) || cfg.Config.User != st.user || st.copyTo != BinaryPath {
		t.Errorf("image: entrypoint %v, user %q, binary at %s; the Dockerfile: entrypoint %v, user %q, binary copied to %s",
			cfg.Config.Entrypoint, cfg.Config.User, BinaryPath, st.entrypoint, st.user, st.copyTo)
	}
	var ports []string
	for p := range cfg.Config.ExposedPorts {
		ports = append(ports, p)
	}
	if len(ports) != len(st.expose) {
		t.Errorf("image exposes %v, the Dockerfile %v", ports, st.expose)
	}
	if cfg.OS != "linux" || cfg.Config.WorkingDir != home {
		t.Errorf("image OS %q, working directory %q; want linux and distroless's %s", cfg.OS, cfg.Config.WorkingDir, home)
	}

	files, contents := layerFiles(t, img)
	want, _ := os.ReadFile(bin)
	if h := files[BinaryPath]; h == nil || h.Mode&0o111 == 0 || !bytes.Equal(contents[BinaryPath], want) {
		t.Errorf("%s: %+v, want the binary, executable", BinaryPath, h)
	}
	if !strings.Contains(string(contents["/etc/passwd"]), "nonroot:x:65532:65532:") || !strings.Contains(string(contents["/etc/group"]), "nonroot:x:65532:") {
		t.Errorf("user 65532 is not distroless's nonroot in /etc/passwd and /etc/group:\n%s\n%s", contents["/etc/passwd"], contents["/etc/group"])
	}
	if h := files["/tmp"]; h == nil || h.Mode&0o1777 != 0o1777 {
		t.Errorf("/tmp: %+v, want a sticky world-writable directory", h)
	}
	if h := files[home]; h == nil || h.Uid != 65532 {
		t.Errorf("%s: %+v, want the nonroot user's", home, h)
	}
	if !bytes.Equal(contents["/etc/ssl/certs/ca-certificates.crt"], []byte("-----BEGIN CERTIFICATE-----\ntest\n-----END CERTIFICATE-----\n")) {
		t.Errorf("the CA bundle is not at /etc/ssl/certs/ca-certificates.crt")
	}

	// The same inputs give the same image: no time or host state leaks into it.
	again := filepath.Join(dir, "again.tar")
	if err := Write(again, Spec{Tag: ref, Binary: bin, CACerts: certs}); err != nil {
		t.Fatal(err)
	}
	img2, err := tarball.ImageFromPath(again, &tag)
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := img.Digest()
	d2, _ := img2.Digest()
	if d1 != d2 {
		t.Errorf("two builds from the same inputs differ: %s, %s", d1, d2)
	}
}

// TestBuiltImages checks the images make images wrote (make test builds them first): each loads under its tag with the
// Dockerfile's user and entrypoint, and the binary in it is the component's, static, and starts (its --help names
// the flags of that component).
func TestBuiltImages(t *testing.T) {
	st := finalStage(t)
	dir := filepath.Join("..", "..", "..", "bin", "images")
	for component, flag := range map[string]string{"manager": "-agent-image", "agent": "-node-name", "agent-delegated": "-node-name"} {
		t.Run(component, func(t *testing.T) {
			path := filepath.Join(dir, component+".tar")
			if _, err := os.Stat(path); err != nil {
				t.Fatalf("%v: run make images (make test does)", err)
			}
			img, err := tarball.ImageFromPath(path, nil)
			if err != nil {
				t.Fatalf("%s does not load: %v", path, err)
			}
			cfg, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(cfg.Config.Entrypoint, st.entrypoint) || cfg.Config.User != st.user {
				t.Errorf("%s: entrypoint %v, user %q; the Dockerfile: %v, %q", component, cfg.Config.Entrypoint, cfg.Config.User, st.entrypoint, st.user)
			}
			_, contents := layerFiles(t, img)
			if contents[BinaryPath] == nil {
				t.Fatalf("no %s in the image", BinaryPath)
			}
			bin := filepath.Join(t.TempDir(), "app")
			if err := os.WriteFile(bin, contents[BinaryPath], 0o755); err != nil {
				t.Fatal(err)
			}
			// Static: no program interpreter (a distroless static image has no dynamic loader).
			f, err := elf.Open(bin)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP {
					t.Errorf("%s's binary needs a dynamic loader", component)
				}
			}
			_ = f.Close()
			out, _ := exec.Command(bin, "--help").CombinedOutput()
			if !strings.Contains(string(out), flag) {
				t.Errorf("%s's binary --help does not name %s:\n%s", component, flag, out)
			}
		})
	}
}

// layerFiles reads the image's one layer: its entries' headers and contents, by absolute path.
func layerFiles(t *testing.T, img v1.Image) (map[string]*tar.Header, map[string][]byte) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("want one layer: %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files, contents := map[string]*tar.Header{}, map[string][]byte{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files, contents
		}
		if err != nil {
			t.Fatal(err)
		}
		path := "/" + strings.TrimSuffix(h.Name, "/")
		files[path] = h
		contents[path], _ = io.ReadAll(tr)
	}
}
