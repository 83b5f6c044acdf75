package main

import (
	"context"
	"errors"
	"flag"

	"github.com/portico-gateway/portico/internal/logging"
)

type kubeConfig struct {
	kubeconfig string
}

func (k *kubeConfig) register(fs *flag.FlagSet) {
	fs.StringVar(&k.kubeconfig, "kubeconfig", "", "Kubernetes mode: path to a kubeconfig (default: in-cluster or $KUBECONFIG)")
}

func runKubernetes(ctx context.Context, log logging.Logger, cfg config) error {
	return errors.New("Kubernetes mode is not available in this build; run with --standalone")
}
