package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/snowflock/snowflock/clonesvc/daemonapi"
	"github.com/snowflock/snowflock/clonesvc/sfldpb"
)

func newVMStartCmd(g *globals) *cobra.Command {
	var r sfldpb.StartVMRequest
	var cpus, mem int
	cmd := &cobra.Command{
		Use:   "start",
		Short: "Boot a new VM",
		Long: `start boots a VM from the kernel and initrd of the configuration (sfld.kvm) or
the ones given. With --wait it returns once the guest agent answers, so the
VM is ready for 'vm exec' and for guest API calls.`,
		Example: `  sfctl vm start --name worker --wait
  sfctl vm start --memory 512 --cpus 2 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cpus < 0 || mem < 0 {
				return usageError{Err: fmt.Errorf("--cpus and --memory must not be negative")}
			}
			r.Cpus, r.MemoryMib = int32(cpus), int32(mem)
			return g.call(cmd.Context(), func(ctx context.Context, c *daemonapi.Client) error {
				vm, err := c.StartVM(ctx, &r)
				if err != nil {
					return err
				}
				return g.print(vm, func(w io.Writer) { fmt.Fprintln(w, vm.Id) })
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&r.Name, "name", "", "VM name and guest host name (default: its ID)")
	f.IntVar(&cpus, "cpus", 0, "vCPUs (default: sfld.kvm.cpus)")
	f.IntVar(&mem, "memory", 0, "memory in MiB (default: sfld.kvm.memory_mib)")
	f.StringVar(&r.Kernel, "kernel", "", "guest kernel (default: sfld.kvm.kernel)")
	f.StringVar(&r.Initrd, "initrd", "", "guest initrd (default: sfld.kvm.initrd)")
	f.StringVar(&r.Append, "append", "", "extra kernel command line")
	f.BoolVar(&r.WaitReady, "wait", false, "return once the guest agent answers")
	return cmd
}
