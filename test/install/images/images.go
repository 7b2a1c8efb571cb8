// Package images assembles the operator's container images without Docker or a registry: one layer holding the
// static binary at the path the Dockerfile copies it to, plus what the distroless static-debian12:nonroot base gives
// that binary (the nonroot user and group, /tmp, the user's home, the CA bundle), and the image config the
// Dockerfile sets (user, entrypoint), written as a docker-archive that `ctr images import` and `docker load` read.
// The Dockerfile stays the way to build the images where Docker runs; TestImagesAgreeWithDockerfile keeps the two
// in agreement.
package images

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// What the Dockerfile's final stage sets (TestImagesAgreeWithDockerfile reads it back from the Dockerfile).
const (
	BinaryPath = "/usr/local/bin/app"
	User       = "65532:65532"
	// distroless's nonroot user: its home is the working directory.
	home = "/home/nonroot"
)

// Spec is one image: the tag it is written under, the static binary it runs, and the CA bundle to include ("": none).
type Spec struct {
	Tag, Binary, CACerts string
}

// Write writes the image as a docker-archive at path.
func Write(path string, s Spec) error {
	tag, err := name.NewTag(s.Tag)
	if err != nil {
		return fmt.Errorf("image tag %q: %w", s.Tag, err)
	}
	layer, err := rootfs(s)
	if err != nil {
		return err
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layer)), nil })
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		return err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", runtime.GOARCH
	cfg.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cfg.Config.Entrypoint = []string{BinaryPath}
	cfg.Config.User = User
	cfg.Config.WorkingDir = home
	cfg.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	if s.CACerts != "" {
		cfg.Config.Env = append(cfg.Config.Env, "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt")
	}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return err
	}
	return tarball.WriteToFile(path, tag, img)
}

// rootfs is the image's one layer, with fixed times and owners so that the same inputs give the same image.
func rootfs(s Spec) ([]byte, error) {
	bin, err := os.ReadFile(s.Binary)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0).UTC()
	dir := func(path string, mode int64, uid int) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: path + "/", Mode: mode, Uid: uid, Gid: uid, ModTime: epoch})
	}
	file := func(path string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: path, Mode: mode, Size: int64(len(data)), ModTime: epoch}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	steps := []func() error{
		func() error { return dir("etc", 0o755, 0) },
		func() error {
			return file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"))
		},
		func() error {
			return file("etc/group", 0o644, []byte("root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"))
		},
		func() error { return dir("home", 0o755, 0) },
		func() error { return dir("home/nonroot", 0o700, 65532) },
		func() error { return dir("tmp", 0o1777, 0) },
		func() error { return dir("usr", 0o755, 0) },
		func() error { return dir("usr/local", 0o755, 0) },
		func() error { return dir("usr/local/bin", 0o755, 0) },
		func() error { return file(BinaryPath[1:], 0o755, bin) },
	}
	if s.CACerts != "" {
		certs, err := os.ReadFile(s.CACerts)
		if err != nil {
			return nil, err
		}
		steps = append(steps, func() error { return dir("etc/ssl", 0o755, 0) }, func() error { return dir("etc/ssl/certs", 0o755, 0) },
			func() error { return file("etc/ssl/certs/ca-certificates.crt", 0o644, certs) })
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
