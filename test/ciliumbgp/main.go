// Command ciliumbgp runs Cilium's own BGP control plane (Cilium v1.20.2, its code from the Go module proxy) against
// an API server, without Cilium's eBPF datapath, so that the operator's end-to-end tests can see what Cilium does
// with the objects the Cilium backend writes.
//
//	ciliumbgp operator --k8s-kubeconfig-path=KUBECONFIG
//	ciliumbgp agent --node=NAME --k8s-kubeconfig-path=KUBECONFIG
//
// The operator mode runs the cells of cilium-operator that the BGP control plane needs: the BGP operator
// (CiliumBGPClusterConfig → CiliumBGPNodeConfig per selected CiliumNode, peer config status) and LB-IPAM (Service
// LoadBalancer addresses from CiliumLoadBalancerIPPools). The agent mode runs the cells of cilium-agent's BGP control
// plane for one node (the GoBGP-based reconcilers, the Service → frontend reflector they read, and the status
// reporter that writes CiliumBGPNodeConfig status); the cell list is that of Cilium's own pkg/bgp/test script test,
// with its fake clientset replaced by Cilium's real one. Neither cilium-agent nor cilium-operator can be built or
// run here as shipped: the agent always includes the datapath (BPF maps, bpffs, kernel probes) and the operator
// imports a module the proxy does not serve (sigs.k8s.io/mcs-api/controllers).
//
// The module is its own (Cilium builds against its own k8s.io v0.36; the operator's module is at v0.37, whose
// client-go Cilium does not compile against), built by hack/build-cilium-bgp.sh into bin/cilium-bgp/.
package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"
	"github.com/spf13/pflag"

	daemonk8s "github.com/cilium/cilium/daemon/k8s"
	operatorbgp "github.com/cilium/cilium/operator/pkg/bgp"
	"github.com/cilium/cilium/operator/pkg/lbipam"
	"github.com/cilium/cilium/pkg/bgp"
	"github.com/cilium/cilium/pkg/bgp/agent"
	"github.com/cilium/cilium/pkg/bgp/manager"
	"github.com/cilium/cilium/pkg/datapath/tables"
	envoyCfg "github.com/cilium/cilium/pkg/envoy/config"
	"github.com/cilium/cilium/pkg/hive"
	ciliumk8s "github.com/cilium/cilium/pkg/k8s"
	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	k8sClient "github.com/cilium/cilium/pkg/k8s/client"
	"github.com/cilium/cilium/pkg/k8s/resource"
	k8sTables "github.com/cilium/cilium/pkg/k8s/tables"
	"github.com/cilium/cilium/pkg/k8s/utils"
	"github.com/cilium/cilium/pkg/kpr"
	"github.com/cilium/cilium/pkg/lbipamconfig"
	"github.com/cilium/cilium/pkg/loadbalancer"
	"github.com/cilium/cilium/pkg/loadbalancer/reflectors"
	"github.com/cilium/cilium/pkg/loadbalancer/writer"
	"github.com/cilium/cilium/pkg/metrics"
	"github.com/cilium/cilium/pkg/node"
	nodetypes "github.com/cilium/cilium/pkg/node/types"
	"github.com/cilium/cilium/pkg/nodeipamconfig"
	"github.com/cilium/cilium/pkg/option"
	"github.com/cilium/cilium/pkg/source"
	"github.com/cilium/cilium/pkg/svcrouteconfig"
	"k8s.io/client-go/util/workqueue"
)

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "operator" && os.Args[1] != "agent") {
		fmt.Fprintln(os.Stderr, "usage: ciliumbgp operator|agent [--node=NAME] --k8s-kubeconfig-path=KUBECONFIG [hive flags]")
		os.Exit(2)
	}
	mode, args := os.Args[1], os.Args[2:]
	own := pflag.NewFlagSet("ciliumbgp", pflag.ContinueOnError)
	own.ParseErrorsAllowlist.UnknownFlags = true
	nodeName := own.String("node", "", "the node this agent is (agent mode)")
	secretsNamespace := own.String("bgp-secrets-namespace", "kube-system", "Cilium's bgpControlPlane.secretsNamespace")
	if err := own.Parse(args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	// Cilium keeps its daemon configuration in a process global that its BGP code reads directly.
	option.Config = &option.DaemonConfig{
		EnableBGPControlPlane:             true,
		EnableBGPControlPlaneStatusReport: true,
		BGPSecretsNamespace:               *secretsNamespace,
		BGPRouterIDAllocationMode:         option.BGPRouterIDAllocationModeDefault,
		IPAM:                              "kubernetes",
		EnableIPv4:                        true,
		EnableIPv6:                        true,
	}
	var h *hive.Hive
	switch mode {
	case "operator":
		h = hive.New(operatorCells()...)
	case "agent":
		if *nodeName == "" {
			fmt.Fprintln(os.Stderr, "agent mode needs --node")
			os.Exit(2)
		}
		// The agent's node name is a process global too: one agent process per node.
		nodetypes.SetName(*nodeName)
		h = hive.New(agentCells()...)
	}
	flags := pflag.NewFlagSet("ciliumbgp", pflag.ContinueOnError)
	flags.String("node", "", "")
	flags.String("bgp-secrets-namespace", "", "")
	h.RegisterFlags(flags)
	if err := flags.Parse(args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := h.Run(log); err != nil {
		log.Error("hive stopped", "error", err)
		os.Exit(1)
	}
}

func daemonConfig() *option.DaemonConfig { return option.Config }

// operatorCells are cilium-operator's BGP and LB-IPAM cells, with the resources operator/k8s would provide (that
// package cannot be imported: it needs the module the proxy does not serve) built the same way here.
func operatorCells() []cell.Cell {
	return []cell.Cell{
		k8sClient.Cell,
		metrics.Cell,
		cell.Config(ciliumk8s.DefaultConfig),
		cell.Provide(ciliumk8s.DefaultServiceWatchConfig),
		cell.Provide(
			daemonConfig,
			ciliumk8s.ServiceResource,
			ciliumk8s.CiliumNodeResource,
			ciliumk8s.CiliumBGPAdvertisementResource,
			ciliumk8s.CiliumBGPPeerConfigResource,
			ciliumk8s.CiliumBGPNodeConfigResource,
			clusterConfigResource,
			nodeConfigOverrideResource,
			poolResource,
		),
		operatorbgp.Cell,
		lbipam.Cell,
	}
}

// The three resources below are operator/k8s's, which pkg/k8s lacks.

func clusterConfigResource(lc cell.Lifecycle, c k8sClient.Clientset, mp workqueue.MetricsProvider) resource.Resource[*ciliumv2.CiliumBGPClusterConfig] {
	return resource.New[*ciliumv2.CiliumBGPClusterConfig](lc, utils.ListerWatcherFromTyped[*ciliumv2.CiliumBGPClusterConfigList](c.CiliumV2().CiliumBGPClusterConfigs()), mp)
}

func nodeConfigOverrideResource(lc cell.Lifecycle, c k8sClient.Clientset, mp workqueue.MetricsProvider) resource.Resource[*ciliumv2.CiliumBGPNodeConfigOverride] {
	return resource.New[*ciliumv2.CiliumBGPNodeConfigOverride](lc, utils.ListerWatcherFromTyped[*ciliumv2.CiliumBGPNodeConfigOverrideList](c.CiliumV2().CiliumBGPNodeConfigOverrides()), mp)
}

func poolResource(lc cell.Lifecycle, c k8sClient.Clientset, mp workqueue.MetricsProvider) resource.Resource[*ciliumv2.CiliumLoadBalancerIPPool] {
	return resource.New[*ciliumv2.CiliumLoadBalancerIPPool](lc, utils.ListerWatcherFromTyped[*ciliumv2.CiliumLoadBalancerIPPoolList](c.CiliumV2().CiliumLoadBalancerIPPools()), mp)
}

// agentCells are the cells of Cilium's own BGP script test (pkg/bgp/test/script_test.go) with Cilium's real
// clientset in place of the fake one.
func agentCells() []cell.Cell {
	return []cell.Cell{
		metrics.Cell,
		bgp.Cell,
		svcrouteconfig.Cell,
		cell.Provide(
			tables.NewRouteTable,
			tables.NewDeviceTable,
			tables.NewNodeAddressTable,
			statedb.RWTable[*tables.Route].ToTable,
			statedb.RWTable[*tables.Device].ToTable,
			statedb.RWTable[tables.NodeAddress].ToTable,
		),
		k8sClient.Cell,
		daemonk8s.ResourcesCell,
		k8sTables.TablesCell,
		node.LocalNodeStoreTestCell,
		cell.Config(envoyCfg.SecretSyncConfig{}),
		loadbalancer.ConfigCell,
		writer.Cell,
		reflectors.Cell,
		lbipamconfig.Cell,
		nodeipamconfig.Cell,
		cell.Provide(func() source.Sources { return source.Sources{} }),
		cell.Provide(daemonConfig, func() kpr.KPRConfig { return kpr.KPRConfig{KubeProxyReplacement: true} }),
		// Stop tears the GoBGP servers down, so that SIGTERM closes the sessions as a stopping agent would.
		cell.Invoke(func(m agent.BGPRouterManager) { m.(*manager.BGPRouterManager).DestroyRouterOnStop(true) }),
	}
}
