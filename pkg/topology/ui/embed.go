// Package ui holds the topology page's static files: index.html, the
// stylesheet and dist/topology.js, the bundle esbuild makes from src/
// and the npm packages of package.json (rebuilt by `make topology-ui`;
// committed, so building Portico needs no npm).
package ui

import (
	"embed"
	"io/fs"
)

//go:embed index.html topology.css dist/topology.js dist/topology.js.LEGAL.txt
var files embed.FS

// Index is the page.
func Index() []byte {
	b, err := files.ReadFile("index.html")
	if err != nil {
		panic(err) // embedded at build time
	}
	return b
}

// Assets serves topology.js, its licences and topology.css.
func Assets() fs.FS {
	sub, err := fs.Sub(files, ".")
	if err != nil {
		panic(err)
	}
	return assetFS{sub}
}

// assetFS serves the bundle and stylesheet by their bare names
// (topology.js rather than dist/topology.js) and nothing else.
type assetFS struct{ fs.FS }

func (a assetFS) Open(name string) (fs.File, error) {
	switch name {
	case "topology.js", "topology.js.LEGAL.txt":
		return a.FS.Open("dist/" + name)
	case "topology.css":
		return a.FS.Open(name)
	}
	return nil, fs.ErrNotExist
}
