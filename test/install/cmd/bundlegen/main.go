// Command bundlegen writes the OLM bundle from config/ (make bundle).
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/anycast-operator/anycast-operator/test/install/bundlegen"
)

func main() {
	root := flag.String("root", "../..", "The repository root.")
	version := flag.String("version", "0.1.0", "The operator's version (semver).")
	image := flag.String("manager-image", "", "The manager's image (default ghcr.io/anycast-operator/manager:v<version>).")
	flag.Parse()
	if err := bundlegen.Generate(*root, *root+"/bundle", *root, bundlegen.Options{Version: *version, ManagerImage: *image}); err != nil {
		fmt.Fprintln(os.Stderr, "bundlegen:", err)
		os.Exit(1)
	}
}
