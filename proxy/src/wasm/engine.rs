//! The one `Engine` of the process, its epoch ticker, the linker, and the cache of
//! compiled components by content hash.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::{Filter as FilterWorld, FilterPre};
use super::limits::TICK;
use super::state::HostState;
use super::version;
use crate::config::{DEFAULT_MEMORY, WasmConfig};

/// The largest `limits.memory` a filter may ask for.
pub(crate) const MAX_MEMORY: usize = 1 << 30;

/// A compiled component, linked and ready to instantiate.
pub(crate) struct Compiled {
    pub pre: FilterPre<HostState>,
    /// The `weft:filter` version the guest targets.
    pub version: String,
    /// SHA-256 of the component's bytes, in hex: what the admin API and audit log show.
    pub sha256: String,
    /// The largest linear memory the component starts with, in bytes: a few hundred KiB
    /// for a Rust filter, the interpreter's pre-initialised heap for Python (~13 MiB) or
    /// JavaScript (~9 MiB).
    pub initial_memory: usize,
}

impl Compiled {
    /// The memory limit of a filter whose config does not set `limits.memory`.
    pub fn default_memory(&self) -> usize {
        default_memory(self.initial_memory)
    }
}

/// [`DEFAULT_MEMORY`], or four times what the component starts with when that is more.
/// A Rust filter (well under 4 MiB at start) keeps 16 MiB; an interpreter, which starts
/// with its heap image and allocates on every call, gets room in proportion (CPython
/// ~51 MiB, SpiderMonkey ~36 MiB) instead of the few MiB 16 MiB would leave it.
pub(crate) fn default_memory(initial: usize) -> usize {
    initial.saturating_mul(4).clamp(DEFAULT_MEMORY, MAX_MEMORY)
}

/// The size of a Wasm page: `resources_required` counts memory in pages.
const WASM_PAGE: u64 = 64 << 10;

/// Compiled components kept for reloads: enough for every filter of a large config.
const CACHE_ENTRIES: usize = 256;

/// Compiled components by sha256 of their bytes, with when each was last used.
type Cache = HashMap<[u8; 32], (Arc<Compiled>, Instant)>;

/// The component engine of the process: wasmtime's engine, the linker of the host
/// interfaces, and the compiled components.
pub(crate) struct Engine {
    pub engine: wasmtime::Engine,
    linker: Linker<HostState>,
    cache: Mutex<Cache>,
    /// The filters a component was compiled for: a compile for one of them is a changed
    /// plugin. Filter names come from the config, so this stays small.
    compiled_for: Mutex<HashSet<Box<str>>>,
    /// Whether the epoch ticker runs: started with the first component, so that a proxy
    /// without Wasm filters has no thread waking its core a thousand times a second.
    ticking: Mutex<bool>,
}

fn wasmtime_error(e: wasmtime::Error) -> anyhow::Error {
    anyhow::Error::from_boxed(e.into())
}

fn engine_config(config: &WasmConfig, pooling: bool) -> anyhow::Result<Config> {
    let mut c = Config::new();
    c.epoch_interruption(true);
    if pooling {
        // `[wasm] max_instances` (default 1000) sizes the pool. Virtual address space is
        // reserved up front (about 4 GiB per memory slot so bounds checks can be elided);
        // physical memory is only what guests touch.
        let instances = config.max_instances;
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(8))
            .max_core_instances_per_component(32.min(instances.saturating_mul(8)))
            .total_memories(instances.saturating_mul(2))
            .max_memories_per_component(4.min(instances.saturating_mul(2)))
            .total_tables(instances.saturating_mul(8))
            .max_tables_per_component(16.min(instances.saturating_mul(8)))
            .total_stacks(instances)
            .max_memory_size(MAX_MEMORY);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    if let Some(dir) = &config.cache_dir {
        // Relative to the config file's folder (config::resolve_paths), which is itself
        // relative when the config is (`--config weft.toml`); wasmtime takes only an
        // absolute path.
        let dir = std::path::absolute(dir)
            .with_context(|| format!("cannot use {} as the Wasm compilation cache", dir.display()))?;
        let mut cache = wasmtime::CacheConfig::new();
        cache.with_directory(&dir);
        let cache = wasmtime::Cache::new(cache)
            .map_err(wasmtime_error)
            .with_context(|| format!("cannot use {} as the Wasm compilation cache", dir.display()))?;
        c.cache(Some(cache));
    }
    Ok(c)
}

impl Engine {
    pub fn new(config: &WasmConfig) -> anyhow::Result<Self> {
        let engine = match wasmtime::Engine::new(&engine_config(config, true)?) {
            Ok(engine) => engine,
            Err(e) => {
                // The pooling allocator reserves address space up front; where that is
                // refused (a low `ulimit -v`), run with on-demand allocation instead.
                tracing::warn!(error = %e, "the pooling allocator is unavailable; allocating instances on demand");
                wasmtime::Engine::new(&engine_config(config, false)?).map_err(wasmtime_error)?
            }
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(wasmtime_error)?;
        FilterWorld::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s).map_err(wasmtime_error)?;
        Ok(Engine {
            engine,
            linker,
            cache: Mutex::new(HashMap::new()),
            compiled_for: Mutex::default(),
            ticking: Mutex::new(false),
        })
    }

    /// Compiles (or finds in the cache) the component at `path`, loaded as the filter
    /// `filter`, checks its WIT version and links it. A compile is logged before it starts
    /// and with its outcome: an interpreter (Python, JavaScript) takes seconds, and a
    /// reload would otherwise be silent that long.
    pub async fn compile(&self, filter: &str, path: &Path) -> anyhow::Result<Arc<Compiled>> {
        // Before any instance of it can run: the guests' CPU budgets count its ticks.
        self.start_ticker()?;
        let bytes = tokio::fs::read(path)
            .await
            .with_context(|| format!("cannot read plugin {}", path.display()))?;
        check_header(&bytes, path)?;
        let hash: [u8; 32] = Sha256::digest(&bytes).into();
        if let Some((compiled, used)) = self.cache.lock().unwrap_or_else(PoisonError::into_inner).get_mut(&hash) {
            *used = Instant::now();
            return Ok(compiled.clone());
        }
        let known = !self
            .compiled_for
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(filter.into());
        let plugin = path.display();
        let size = bytes.len();
        if known {
            tracing::info!(filter, %plugin, bytes = size, "plugin changed, compiling…");
        } else {
            tracing::info!(filter, %plugin, bytes = size, "compiling plugin…");
        }
        let started = Instant::now();
        let outcome = self.compile_new(path, bytes, hash).await;
        let ms = started.elapsed().as_millis() as u64;
        match &outcome {
            Ok(_) => tracing::info!(filter, %plugin, ms, "plugin compiled"),
            Err(e) => tracing::warn!(filter, %plugin, ms, error = format!("{e:#}"), "plugin failed to compile"),
        }
        outcome
    }

    fn start_ticker(&self) -> anyhow::Result<()> {
        let mut ticking = self.ticking.lock().unwrap_or_else(PoisonError::into_inner);
        if !*ticking {
            spawn_ticker(&self.engine)?;
            *ticking = true;
        }
        Ok(())
    }

    async fn compile_new(&self, path: &Path, bytes: Vec<u8>, hash: [u8; 32]) -> anyhow::Result<Arc<Compiled>> {
        let engine = self.engine.clone();
        // Compiling takes tens of milliseconds of CPU: keep it off the async workers.
        let component = tokio::task::spawn_blocking(move || Component::new(&engine, &bytes))
            .await
            .context("the compile task failed")?
            .map_err(wasmtime_error)
            .with_context(|| format!("{} is not a valid Wasm component", path.display()))?;

        let version = version::check(&component, &self.engine).with_context(|| format!("plugin {}", path.display()))?;
        // `None` only for a component that instantiates imported modules, which a filter
        // cannot (the host provides no modules).
        let initial_memory = component
            .resources_required()
            .and_then(|r| r.max_initial_memory_size)
            .map_or(0, |pages| {
                usize::try_from(pages.saturating_mul(WASM_PAGE)).unwrap_or(usize::MAX)
            });
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(wasmtime_error)
            .with_context(|| format!("plugin {} needs something this host does not provide", path.display()))?;
        let pre = FilterPre::new(pre)
            .map_err(wasmtime_error)
            .with_context(|| format!("plugin {} does not export the weft:filter hooks", path.display()))?;
        let sha256 = hash.iter().map(|b| format!("{b:02x}")).collect();
        let compiled = Arc::new(Compiled {
            pre,
            version,
            sha256,
            initial_memory,
        });

        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= CACHE_ENTRIES {
            let oldest = cache.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                cache.remove(&oldest);
            }
        }
        cache.insert(hash, (compiled.clone(), Instant::now()));
        Ok(compiled)
    }
}

/// Rejects what is not a component before handing it to the compiler, whose messages
/// for these cases are less direct.
fn check_header(bytes: &[u8], path: &Path) -> anyhow::Result<()> {
    let file = path.display();
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        bail!("{file} is not a WebAssembly file (no `\\0asm` header); expected a component built for wasm32-wasip2");
    }
    // Bytes 4..8: version 1 is a core module; components use a layer byte of 1.
    if bytes[4..8] == [1, 0, 0, 0] {
        bail!(
            "{file} is a core Wasm module, not a component: build it for wasm32-wasip2 (`cargo plugins`) \
             or wrap it with `wasm-tools component new`"
        );
    }
    if bytes[6..8] != [1, 0] {
        return Err(anyhow!(
            "{file} has an unknown Wasm encoding (header {:02x?})",
            &bytes[4..8]
        ));
    }
    Ok(())
}

/// Advances the engine's epoch every [`TICK`]; exits when the engine is dropped.
fn spawn_ticker(engine: &wasmtime::Engine) -> anyhow::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("weft-wasm-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        })
        .context("cannot start the Wasm epoch thread")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_components_keep_the_default_memory_and_interpreters_get_four_times_their_heap() {
        assert_eq!(default_memory(0), DEFAULT_MEMORY);
        assert_eq!(default_memory(1 << 20), DEFAULT_MEMORY, "a Rust filter");
        assert_eq!(default_memory(4 << 20), DEFAULT_MEMORY);
        assert_eq!(default_memory(13 << 20), 52 << 20, "CPython");
        assert_eq!(default_memory(usize::MAX), MAX_MEMORY, "capped at the host's maximum");
    }
}
