package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/storegate/storegate/plugins"
)

func pluginCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "plugin", Short: "Check WebAssembly plugins"}
	cmd.AddCommand(pluginCheckCmd())
	return cmd
}

func pluginCheckCmd() *cobra.Command {
	var config string
	cmd := &cobra.Command{
		Use:   "check FILE.wasm [--config JSON]",
		Short: "Report whether a module implements storegate's plugin ABI v1, and why not",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			wasm, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			var cfg []byte
			if config != "" {
				cfg = []byte(config)
			}
			r, err := plugins.Check(cmd.Context(), wasm, cfg)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "%s: ABI version %d, capabilities %v\n", args[0], r.ABIVersion, r.Capabilities)
			fmt.Fprintf(out, "exports: %s\n", strings.Join(r.Exports, ", "))
			if r.OK() {
				fmt.Fprintln(out, "ok: implements storegate plugin ABI v1")
				return nil
			}
			for _, p := range r.Problems {
				fmt.Fprintln(out, "problem:", p)
			}
			return fmt.Errorf("%s does not implement storegate plugin ABI v1 (%d problems)", args[0], len(r.Problems))
		},
	}
	cmd.Flags().StringVar(&config, "config", "", "the plugin's configuration (JSON) to run its init with")
	return cmd
}
