//! Removes what runtime instances that died without shutting down left:
//! `cleanup <instance>...` kills their sandboxes through their cgroups and
//! removes the cgroups; `cleanup --net <instance> <state_dir>` removes the
//! node network's namespaces, veths and nftables table of that instance. A
//! restarted runtime does this for its own instance; this is for instances
//! that never come back.

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--net") {
        let [_, instance, state_dir] = &args[..] else {
            anyhow::bail!("usage: cleanup --net <instance> <state_dir>")
        };
        let config = sandbar_net::NetConfig {
            instance: instance.clone(),
            // Only names matter for removal; any subnet does.
            subnet: "10.255.255.0/24".parse()?,
            state_dir: state_dir.into(),
            pool_size: 0,
            dns_upstream: Vec::new(),
            open_ranges: Vec::new(),
            public_ranges: Vec::new(),
        };
        sandbar_net::Network::remove_instance(&config).await?;
        println!("{instance}: network removed");
        return Ok(());
    }
    let hierarchy = sandbar_runtime::cgroup::Hierarchy::detect()?;
    for instance in args {
        let removed = hierarchy.remove_instance(&instance);
        println!("{instance}: {removed} sandbox cgroups removed");
    }
    Ok(())
}
