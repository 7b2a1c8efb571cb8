// Command mkimage writes one of the operator's images as a docker-archive, from a static binary, without Docker
// (package images says what goes in). make images runs it for the manager, the agent and the delegated agent.
//
//	mkimage -o bin/images/manager.tar -t ghcr.io/anycast-operator/manager:dev -binary bin/static/manager [-ca-certs /etc/ssl/certs/ca-certificates.crt]
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/anycast-operator/anycast-operator/test/install/images"
)

func main() {
	out := flag.String("o", "", "the docker-archive to write")
	tag := flag.String("t", "", "the image's tag")
	binary := flag.String("binary", "", "the static binary the image runs")
	certs := flag.String("ca-certs", "", "a CA bundle to include as /etc/ssl/certs/ca-certificates.crt, as distroless does")
	flag.Parse()
	if *out == "" || *tag == "" || *binary == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := images.Write(*out, images.Spec{Tag: *tag, Binary: *binary, CACerts: *certs}); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}
