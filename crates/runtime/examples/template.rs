//! Builds or lists templates of a store, for developing the runtime:
//! `template build <name> [store] [uid_base]`, `template ls [store]`.

use sandbar_runtime::templates::TemplateStore;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let store_dir = |i: usize| {
        args.get(i)
            .cloned()
            .unwrap_or_else(|| "/var/lib/sandbar/templates".into())
    };
    match args.first().map(String::as_str) {
        Some("build") => {
            let name = args
                .get(1)
                .ok_or_else(|| anyhow::anyhow!("template name needed"))?;
            let uid_base: u32 = args
                .get(3)
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(1_000_000);
            let store = TemplateStore::open(store_dir(2))?;
            let started = std::time::Instant::now();
            let t = store.build_builtin(name, uid_base, &|line: &str| println!("  {line}"))?;
            println!(
                "{} -> {} in {:.1}s",
                t.meta.name,
                t.rootfs.display(),
                started.elapsed().as_secs_f64()
            );
        }
        Some("ls") => {
            for m in TemplateStore::open(store_dir(1))?.list()? {
                println!(
                    "{:<22} {} {} uid_base={} {}",
                    m.name,
                    m.built_at,
                    &m.recipe_hash.get(..12).unwrap_or(""),
                    m.uid_base,
                    m.description
                );
            }
        }
        _ => anyhow::bail!("usage: template build <name> [store] [uid_base] | template ls [store]"),
    }
    Ok(())
}
