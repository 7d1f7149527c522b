//! `cargo xtask public-api`: the public API of each published crate, one item per line, compared
//! with the snapshot committed under `public-api/` so that a change to what other projects can
//! depend on is always deliberate (it shows up in review as a diff of that file).
//!
//! - `cargo xtask public-api` fails, printing the difference, when a crate's API is not its snapshot.
//! - `cargo xtask public-api --bless` rewrites the snapshots.
//!
//! The same rustdoc run checks the crates' documentation with `-D warnings` (broken intra-doc
//! links, malformed doc comments), so CI runs rustdoc once, not twice.
//!
//! The API is read from rustdoc's JSON output (`--output-format json`). That output is unstable,
//! so it is requested with `RUSTC_BOOTSTRAP=1` on the stable toolchain, and its format version is
//! checked: a toolchain whose JSON this renderer does not know fails with a clear message rather
//! than a misleading diff. Every public path an item is reachable by is listed (a re-export is an
//! API of its own), with its signature, the fields and variants of types, inherent methods, trait
//! implementations (auto traits included, since losing `Send` breaks users; blanket
//! implementations left out) and `#[non_exhaustive]`.

use std::{
    collections::{BTreeSet, HashMap},
    fmt::Write as _,
    fs,
    path::PathBuf,
};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::util::{cargo, project_root, run_cmd, target_dir};

/// The crates published for other projects (the apps are not): their API is snapshotted and
/// CI packages them.
pub(crate) const CRATES: &[&str] = &[
    "cache-core",
    "cache-memory",
    "cache-upstash",
    "serve-limits",
    "upstash-gateway",
];

/// Marker traits left out of the API: unstable, so they promise users nothing.
const UNSTABLE_MARKER_TRAITS: &[&str] = &[
    "core::marker::Freeze",
    "core::marker::UnsafeUnpin",
    "core::marker::StructuralPartialEq",
];

/// The rustdoc JSON format versions this renderer reads.
const FORMAT_VERSIONS: std::ops::RangeInclusive<u64> = 57..=57;

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let mut bless = false;
    for arg in args {
        match arg.as_str() {
            "--bless" => bless = true,
            other => bail!("unknown option {other:?}; usage: cargo xtask public-api [--bless]"),
        }
    }
    let mut stale = Vec::new();
    for krate in CRATES {
        let api = render(&rustdoc_json(krate)?)
            .with_context(|| format!("reading the rustdoc JSON of {krate}"))?;
        let path = snapshot_path(krate);
        let committed = fs::read_to_string(&path).unwrap_or_default();
        if committed == api {
            eprintln!("public-api: {krate}: unchanged");
            continue;
        }
        if bless {
            fs::create_dir_all(path.parent().expect("snapshot has a directory"))?;
            fs::write(&path, &api)?;
            eprintln!(
                "public-api: {krate}: snapshot written to {}",
                path.display()
            );
        } else {
            print_diff(krate, &committed, &api);
            stale.push(*krate);
        }
    }
    if !stale.is_empty() {
        bail!(
            "the public API of {} changed (above: - removed, + added). If that is deliberate, run \
             `cargo xtask public-api --bless` and commit public-api/",
            stale.join(", ")
        );
    }
    Ok(())
}

fn snapshot_path(krate: &str) -> PathBuf {
    project_root()
        .join("public-api")
        .join(format!("{krate}.txt"))
}

/// Set when xtask runs as cargo's `RUSTDOC` (see [`rustdoc_json`]).
const AS_RUSTDOC: &str = "XTASK_AS_RUSTDOC";

/// When cargo started this process as its rustdoc: runs the real rustdoc with unstable options
/// allowed and returns its exit code; `None` otherwise.
pub(crate) fn run_as_rustdoc() -> Option<std::process::ExitCode> {
    let rustdoc = std::env::var_os(AS_RUSTDOC)?;
    let status = std::process::Command::new(rustdoc)
        .args(std::env::args_os().skip(1))
        .env_remove(AS_RUSTDOC)
        .env("RUSTC_BOOTSTRAP", "1")
        .status();
    Some(match status {
        Ok(status) => {
            std::process::ExitCode::from(u8::try_from(status.code().unwrap_or(1)).unwrap_or(1))
        }
        Err(err) => {
            eprintln!("xtask: could not run rustdoc: {err}");
            std::process::ExitCode::FAILURE
        }
    })
}

/// Runs rustdoc for `krate` (all features, so feature-gated API is covered) and parses its JSON.
fn rustdoc_json(krate: &str) -> anyhow::Result<Value> {
    // Only rustdoc gets RUSTC_BOOTSTRAP, through xtask itself as cargo's `RUSTDOC`: set for the
    // whole cargo run, it would also reach build scripts (proc-macro2's, thiserror's) that rerun
    // when it changes, and every switch between this and a normal build would rebuild half the
    // dependency tree.
    let dir = target_dir();
    let real_rustdoc = std::env::var_os("RUSTDOC").unwrap_or_else(|| "rustdoc".into());
    let mut cmd = cargo();
    cmd.env("RUSTDOC", std::env::current_exe()?)
        .env(AS_RUSTDOC, real_rustdoc)
        .args(["rustdoc", "--quiet", "--all-features", "-p", krate])
        .args([
            "--",
            "-Z",
            "unstable-options",
            "--output-format",
            "json",
            "-D",
            "warnings",
        ]);
    run_cmd(cmd)?;
    let file = dir
        .join("doc")
        .join(format!("{}.json", krate.replace('-', "_")));
    let text = fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let json: Value = serde_json::from_str(&text)?;
    let version = json["format_version"].as_u64().unwrap_or(0);
    if !FORMAT_VERSIONS.contains(&version) {
        bail!(
            "rustdoc JSON format {version} (this toolchain) is not one xtask/src/public_api.rs \
             reads ({FORMAT_VERSIONS:?}); update the renderer for it, then re-bless"
        );
    }
    Ok(json)
}

fn print_diff(krate: &str, old: &str, new: &str) {
    let old: BTreeSet<&str> = old.lines().collect();
    let new: BTreeSet<&str> = new.lines().collect();
    eprintln!("public-api: {krate}: changed");
    for line in old.difference(&new) {
        eprintln!("  - {line}");
    }
    for line in new.difference(&old) {
        eprintln!("  + {line}");
    }
}

/// The crate's public API: sorted, one item per line.
pub(crate) fn render(json: &Value) -> anyhow::Result<String> {
    let root = json["root"].to_string();
    let index = json["index"]
        .as_object()
        .context("rustdoc JSON without an index")?;
    let crate_name = index
        .get(&root)
        .and_then(|item| item["name"].as_str())
        .context("rustdoc JSON without its root module")?;
    let mut api = Api {
        json,
        index,
        public_paths: HashMap::new(),
        lines: BTreeSet::new(),
    };
    // Two passes: first where each local item is reachable, so types in signatures are named by
    // a public path rather than by the private module that defines them; then the lines.
    api.walk_module(&root, crate_name, Pass::Paths);
    api.walk_module(&root, crate_name, Pass::Lines);
    let mut out = String::new();
    for line in &api.lines {
        out.push_str(line);
        out.push('\n');
    }
    Ok(out)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    Paths,
    Lines,
}

struct Api<'a> {
    json: &'a Value,
    index: &'a serde_json::Map<String, Value>,
    /// The shortest public path of each local item.
    public_paths: HashMap<String, String>,
    lines: BTreeSet<String>,
}

impl Api<'_> {
    fn item(&self, id: &Value) -> Option<&Value> {
        self.index.get(&id.to_string())
    }

    fn walk_module(&mut self, id: &str, path: &str, pass: Pass) {
        let Some(module) = self.index.get(id) else {
            return;
        };
        let items: Vec<Value> = module["inner"]["module"]["items"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for item_id in items {
            let Some(item) = self.item(&item_id).cloned() else {
                continue;
            };
            if item["visibility"] != "public" {
                continue;
            }
            if let Some(usage) = item["inner"].get("use") {
                self.walk_use(usage, path, pass);
                continue;
            }
            let Some(name) = item["name"].as_str() else {
                continue;
            };
            self.walk_item(
                &item_id.to_string(),
                &item,
                &format!("{path}::{name}"),
                pass,
            );
        }
    }

    fn walk_use(&mut self, usage: &Value, path: &str, pass: Pass) {
        let target = usage["id"].to_string();
        let local = self.index.get(&target).cloned();
        match (usage["is_glob"].as_bool().unwrap_or(false), local) {
            (true, Some(target_item)) if target_item["inner"].get("module").is_some() => {
                self.walk_module(&target, path, pass);
            }
            (false, Some(target_item)) => {
                let name = usage["name"].as_str().unwrap_or("_");
                self.walk_item(&target, &target_item, &format!("{path}::{name}"), pass);
            }
            // A re-export of another crate's item: its API is that crate's, only the path is ours.
            _ if pass == Pass::Lines => {
                let source = usage["source"].as_str().unwrap_or("?");
                let name = usage["name"].as_str().unwrap_or("_");
                let glob = if usage["is_glob"] == true { "::*" } else { "" };
                self.lines
                    .insert(format!("pub use {path}::{name}{glob} = {source}{glob}"));
            }
            _ => {}
        }
    }

    fn walk_item(&mut self, id: &str, item: &Value, path: &str, pass: Pass) {
        if pass == Pass::Paths {
            let shorter = self
                .public_paths
                .get(id)
                .is_none_or(|known| path.len() < known.len());
            if shorter {
                self.public_paths.insert(id.to_owned(), path.to_owned());
            }
            if item["inner"].get("module").is_some() {
                self.walk_module(id, path, pass);
            }
            return;
        }
        let non_exhaustive = if has_attr(item, "non_exhaustive") {
            "#[non_exhaustive] "
        } else {
            ""
        };
        let (kind, inner) = match item["inner"].as_object().and_then(|o| o.iter().next()) {
            Some((kind, inner)) => (kind.as_str(), inner),
            None => return,
        };
        match kind {
            "module" => {
                self.lines.insert(format!("pub mod {path}"));
                self.walk_module(id, path, pass);
            }
            "function" => {
                let line = self.function(path, inner);
                self.lines.insert(line);
            }
            "struct" => {
                let generics = self.generics(&inner["generics"]);
                let where_ = self.where_clause(&inner["generics"]);
                let kind = &inner["kind"];
                let shape = if kind == "unit" {
                    String::new()
                } else if let Some(fields) = kind.get("tuple").and_then(Value::as_array) {
                    let fields: Vec<String> = fields
                        .iter()
                        .map(|field| match self.item(field) {
                            Some(field) => {
                                format!("pub {}", self.ty(&field["inner"]["struct_field"]))
                            }
                            None => "_".to_owned(),
                        })
                        .collect();
                    format!("({})", fields.join(", "))
                } else {
                    let plain = &kind["plain"];
                    for field in plain["fields"].as_array().into_iter().flatten() {
                        if let Some(field) = self.item(field) {
                            let line = format!(
                                "pub {path}::{}: {}",
                                field["name"].as_str().unwrap_or("_"),
                                self.ty(&field["inner"]["struct_field"])
                            );
                            self.lines.insert(line);
                        }
                    }
                    if plain["has_stripped_fields"] == true {
                        " { /* private fields */ }".to_owned()
                    } else {
                        String::new()
                    }
                };
                self.lines.insert(format!(
                    "{non_exhaustive}pub struct {path}{generics}{shape}{where_}"
                ));
                self.impls(path, inner);
            }
            "enum" => {
                let generics = self.generics(&inner["generics"]);
                let where_ = self.where_clause(&inner["generics"]);
                self.lines
                    .insert(format!("{non_exhaustive}pub enum {path}{generics}{where_}"));
                for variant in inner["variants"].as_array().into_iter().flatten() {
                    if let Some(variant) = self.item(variant) {
                        let line = self.variant(path, variant);
                        self.lines.insert(line);
                    }
                }
                self.impls(path, inner);
            }
            "trait" => {
                let generics = self.generics(&inner["generics"]);
                let bounds = self.bounds(&inner["bounds"]);
                let supertraits = if bounds.is_empty() {
                    String::new()
                } else {
                    format!(": {bounds}")
                };
                let unsafe_ = if inner["is_unsafe"] == true {
                    "unsafe "
                } else {
                    ""
                };
                let dyn_ = if inner["is_dyn_compatible"] == true {
                    " (dyn-compatible)"
                } else {
                    ""
                };
                self.lines.insert(format!(
                    "pub {unsafe_}trait {path}{generics}{supertraits}{dyn_}"
                ));
                for member in inner["items"].as_array().into_iter().flatten() {
                    let Some(member) = self.item(member) else {
                        continue;
                    };
                    let name = member["name"].as_str().unwrap_or("_");
                    let member_path = format!("{path}::{name}");
                    if let Some(function) = member["inner"].get("function") {
                        let provided = if function["has_body"] == true {
                            " (provided)"
                        } else {
                            ""
                        };
                        let line = format!("{}{provided}", self.function(&member_path, function));
                        self.lines.insert(line);
                    } else if let Some(assoc) = member["inner"].get("assoc_type") {
                        let bounds = self.bounds(&assoc["bounds"]);
                        let bounds = if bounds.is_empty() {
                            String::new()
                        } else {
                            format!(": {bounds}")
                        };
                        self.lines.insert(format!("type {member_path}{bounds}"));
                    } else if let Some(assoc) = member["inner"].get("assoc_const") {
                        let ty = self.ty(&assoc["type"]);
                        self.lines.insert(format!("const {member_path}: {ty}"));
                    }
                }
            }
            "type_alias" => {
                let generics = self.generics(&inner["generics"]);
                let ty = self.ty(&inner["type"]);
                self.lines
                    .insert(format!("pub type {path}{generics} = {ty}"));
            }
            "constant" => {
                let ty = self.ty(&inner["type"]);
                let value = inner["const"]["expr"].as_str().unwrap_or("_");
                self.lines
                    .insert(format!("pub const {path}: {ty} = {value}"));
            }
            "static" => {
                let ty = self.ty(&inner["type"]);
                self.lines.insert(format!("pub static {path}: {ty}"));
            }
            "macro" => {
                // `#[macro_export]` macros live at the crate root whatever module defines them.
                self.lines.insert(format!("macro {path}!"));
            }
            other => {
                self.lines.insert(format!("pub {other} {path}"));
            }
        }
    }

    fn variant(&self, path: &str, variant: &Value) -> String {
        let name = variant["name"].as_str().unwrap_or("_");
        let kind = &variant["inner"]["variant"]["kind"];
        let fields = |ids: &Value| -> Vec<(String, String)> {
            ids.as_array()
                .into_iter()
                .flatten()
                .filter_map(|id| self.item(id))
                .map(|field| {
                    (
                        field["name"].as_str().unwrap_or("_").to_owned(),
                        self.ty(&field["inner"]["struct_field"]),
                    )
                })
                .collect()
        };
        let shape = if let Some(ids) = kind.get("tuple") {
            let types: Vec<String> = fields(ids).into_iter().map(|(_, ty)| ty).collect();
            format!("({})", types.join(", "))
        } else if let Some(plain) = kind.get("struct") {
            let named: Vec<String> = fields(&plain["fields"])
                .into_iter()
                .map(|(name, ty)| format!("{name}: {ty}"))
                .collect();
            format!(" {{ {} }}", named.join(", "))
        } else {
            String::new()
        };
        format!("pub {path}::{name}{shape}")
    }

    /// Inherent methods and trait implementations of a struct or enum at `path`.
    fn impls(&mut self, path: &str, inner: &Value) {
        let impls: Vec<Value> = inner["impls"].as_array().cloned().unwrap_or_default();
        for impl_id in impls {
            let Some(block) = self
                .item(&impl_id)
                .map(|item| item["inner"]["impl"].clone())
            else {
                continue;
            };
            if !block["blanket_impl"].is_null() {
                continue;
            }
            let generics = self.generics(&block["generics"]);
            let where_ = self.where_clause(&block["generics"]);
            if block["trait"].is_null() {
                for member in block["items"].as_array().into_iter().flatten() {
                    let Some(member) = self.item(member) else {
                        continue;
                    };
                    if member["visibility"] != "public" {
                        continue;
                    }
                    let name = member["name"].as_str().unwrap_or("_");
                    let member_path = format!("{path}::{name}");
                    if let Some(function) = member["inner"].get("function") {
                        let line = self.function(&member_path, function);
                        self.lines.insert(line);
                    } else if let Some(assoc) = member["inner"].get("assoc_const") {
                        let ty = self.ty(&assoc["type"]);
                        self.lines.insert(format!("pub const {member_path}: {ty}"));
                    }
                }
            } else {
                let trait_path = self.path(&block["trait"]);
                // Unstable marker traits (`Freeze`, `UnsafeUnpin`, the `StructuralPartialEq` that
                // derives add) are not a promise to users and come and go with the toolchain.
                if UNSTABLE_MARKER_TRAITS
                    .iter()
                    .any(|name| trait_path.ends_with(name))
                {
                    continue;
                }
                let negative = if block["is_negative"] == true {
                    "!"
                } else {
                    ""
                };
                let line = format!(
                    "impl{generics} {negative}{trait_path} for {}{where_}",
                    self.ty(&block["for"])
                );
                self.lines.insert(line);
            }
        }
    }

    fn function(&self, path: &str, function: &Value) -> String {
        let header = &function["header"];
        let mut out = String::from("pub ");
        for (flag, word) in [
            ("is_const", "const "),
            ("is_async", "async "),
            ("is_unsafe", "unsafe "),
        ] {
            if header[flag] == true {
                out.push_str(word);
            }
        }
        let generics = self.generics(&function["generics"]);
        let sig = &function["sig"];
        let inputs: Vec<String> = sig["inputs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|input| {
                let name = input[0].as_str().unwrap_or("_");
                let ty = &input[1];
                if name == "self" {
                    self_param(ty).unwrap_or_else(|| format!("self: {}", self.ty(ty)))
                } else {
                    format!("{name}: {}", self.ty(ty))
                }
            })
            .collect();
        let output = if sig["output"].is_null() {
            String::new()
        } else {
            format!(" -> {}", self.ty(&sig["output"]))
        };
        let where_ = self.where_clause(&function["generics"]);
        let _ = write!(
            out,
            "fn {path}{generics}({}){output}{where_}",
            inputs.join(", ")
        );
        out
    }

    fn generics(&self, generics: &Value) -> String {
        let params: Vec<String> = generics["params"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|param| self.generic_param(param))
            .collect();
        if params.is_empty() {
            String::new()
        } else {
            format!("<{}>", params.join(", "))
        }
    }

    fn generic_param(&self, param: &Value) -> Option<String> {
        let name = param["name"].as_str().unwrap_or("_");
        let kind = &param["kind"];
        if let Some(lifetime) = kind.get("lifetime") {
            let outlives: Vec<&str> = lifetime["outlives"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            return Some(if outlives.is_empty() {
                name.to_owned()
            } else {
                format!("{name}: {}", outlives.join(" + "))
            });
        }
        if let Some(ty) = kind.get("type") {
            // `impl Trait` arguments appear as synthetic parameters; the argument shows them.
            if ty["is_synthetic"] == true {
                return None;
            }
            let bounds = self.bounds(&ty["bounds"]);
            let mut out = name.to_owned();
            if !bounds.is_empty() {
                let _ = write!(out, ": {bounds}");
            }
            if !ty["default"].is_null() {
                let _ = write!(out, " = {}", self.ty(&ty["default"]));
            }
            return Some(out);
        }
        if let Some(konst) = kind.get("const") {
            return Some(format!("const {name}: {}", self.ty(&konst["type"])));
        }
        Some(name.to_owned())
    }

    fn where_clause(&self, generics: &Value) -> String {
        let predicates: Vec<String> = generics["where_predicates"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|predicate| {
                if let Some(bound) = predicate.get("bound_predicate") {
                    let hrtb = self.generics(&json_object("params", &bound["generic_params"]));
                    let hrtb = if hrtb.is_empty() {
                        String::new()
                    } else {
                        format!("for{hrtb} ")
                    };
                    format!(
                        "{hrtb}{}: {}",
                        self.ty(&bound["type"]),
                        self.bounds(&bound["bounds"])
                    )
                } else if let Some(lifetime) = predicate.get("lifetime_predicate") {
                    let outlives: Vec<&str> = lifetime["outlives"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    format!(
                        "{}: {}",
                        lifetime["lifetime"].as_str().unwrap_or("'_"),
                        outlives.join(" + ")
                    )
                } else if let Some(eq) = predicate.get("eq_predicate") {
                    format!("{} == {}", self.ty(&eq["lhs"]), self.term(&eq["rhs"]))
                } else {
                    predicate.to_string()
                }
            })
            .collect();
        if predicates.is_empty() {
            String::new()
        } else {
            format!(" where {}", predicates.join(", "))
        }
    }

    fn bounds(&self, bounds: &Value) -> String {
        let bounds: Vec<String> = bounds
            .as_array()
            .into_iter()
            .flatten()
            .map(|bound| {
                if let Some(trait_bound) = bound.get("trait_bound") {
                    let hrtb =
                        self.generics(&json_object("params", &trait_bound["generic_params"]));
                    let hrtb = if hrtb.is_empty() {
                        String::new()
                    } else {
                        format!("for{hrtb} ")
                    };
                    let modifier = match trait_bound["modifier"].as_str() {
                        Some("maybe") => "?",
                        Some("maybe_const") => "~const ",
                        _ => "",
                    };
                    format!("{hrtb}{modifier}{}", self.path(&trait_bound["trait"]))
                } else if let Some(lifetime) = bound.get("outlives") {
                    lifetime.as_str().unwrap_or("'_").to_owned()
                } else if let Some(captured) = bound.get("use") {
                    let names: Vec<String> = captured
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|arg| match arg {
                            Value::Object(map) => map
                                .values()
                                .next()
                                .and_then(Value::as_str)
                                .unwrap_or("_")
                                .to_owned(),
                            other => other.as_str().unwrap_or("_").to_owned(),
                        })
                        .collect();
                    format!("use<{}>", names.join(", "))
                } else {
                    bound.to_string()
                }
            })
            .collect();
        bounds.join(" + ")
    }

    /// A path to a type or trait: the item's public path when it is ours, its defining path when
    /// it is another crate's (stable whatever our `use` lines say), with its generic arguments.
    fn path(&self, path: &Value) -> String {
        let id = path["id"].to_string();
        let name = self.public_paths.get(&id).cloned().unwrap_or_else(|| {
            self.json["paths"][&id]["path"]
                .as_array()
                .map(|parts| {
                    parts
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("::")
                })
                .unwrap_or_else(|| path["path"].as_str().unwrap_or("?").to_owned())
        });
        format!("{name}{}", self.generic_args(&path["args"]))
    }

    fn generic_args(&self, args: &Value) -> String {
        if let Some(angle) = args.get("angle_bracketed") {
            let mut parts: Vec<String> = angle["args"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|arg| {
                    if let Some(ty) = arg.get("type") {
                        self.ty(ty)
                    } else if let Some(lifetime) = arg.get("lifetime") {
                        lifetime.as_str().unwrap_or("'_").to_owned()
                    } else if let Some(konst) = arg.get("const") {
                        konst["expr"].as_str().unwrap_or("_").to_owned()
                    } else {
                        "_".to_owned()
                    }
                })
                .collect();
            for constraint in angle["constraints"].as_array().into_iter().flatten() {
                let name = format!(
                    "{}{}",
                    constraint["name"].as_str().unwrap_or("_"),
                    self.generic_args(&constraint["args"])
                );
                let binding = &constraint["binding"];
                if let Some(term) = binding.get("equality") {
                    parts.push(format!("{name} = {}", self.term(term)));
                } else if let Some(bounds) = binding.get("constraint") {
                    parts.push(format!("{name}: {}", self.bounds(bounds)));
                }
            }
            if parts.is_empty() {
                String::new()
            } else {
                format!("<{}>", parts.join(", "))
            }
        } else if let Some(paren) = args.get("parenthesized") {
            let inputs: Vec<String> = paren["inputs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|ty| self.ty(ty))
                .collect();
            let output = if paren["output"].is_null() {
                String::new()
            } else {
                format!(" -> {}", self.ty(&paren["output"]))
            };
            format!("({}){output}", inputs.join(", "))
        } else {
            String::new()
        }
    }

    fn term(&self, term: &Value) -> String {
        if let Some(ty) = term.get("type") {
            self.ty(ty)
        } else if let Some(konst) = term.get("constant") {
            konst["expr"].as_str().unwrap_or("_").to_owned()
        } else {
            term.to_string()
        }
    }

    fn ty(&self, ty: &Value) -> String {
        let Some((kind, inner)) = ty.as_object().and_then(|o| o.iter().next()) else {
            // Unit variants of the type enum are plain strings (`"infer"`).
            return match ty.as_str() {
                Some("infer") => "_".to_owned(),
                Some(other) => other.to_owned(),
                None => "?".to_owned(),
            };
        };
        match kind.as_str() {
            "resolved_path" => self.path(inner),
            "generic" | "primitive" => inner.as_str().unwrap_or("?").to_owned(),
            "tuple" => {
                let types: Vec<String> = inner
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| self.ty(t))
                    .collect();
                if types.len() == 1 {
                    format!("({},)", types[0])
                } else {
                    format!("({})", types.join(", "))
                }
            }
            "slice" => format!("[{}]", self.ty(inner)),
            "array" => format!(
                "[{}; {}]",
                self.ty(&inner["type"]),
                inner["len"].as_str().unwrap_or("_")
            ),
            "borrowed_ref" => format!("{}{}", reference_prefix(inner), self.ty(&inner["type"])),
            "raw_pointer" => {
                let mutability = if inner["is_mutable"] == true {
                    "mut"
                } else {
                    "const"
                };
                format!("*{mutability} {}", self.ty(&inner["type"]))
            }
            "impl_trait" => format!("impl {}", self.bounds(inner)),
            "dyn_trait" => {
                let mut parts: Vec<String> = inner["traits"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|poly| self.path(&poly["trait"]))
                    .collect();
                if let Some(lifetime) = inner["lifetime"].as_str() {
                    parts.push(lifetime.to_owned());
                }
                format!("dyn {}", parts.join(" + "))
            }
            "function_pointer" => {
                let inputs: Vec<String> = inner["sig"]["inputs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|input| self.ty(&input[1]))
                    .collect();
                let output = if inner["sig"]["output"].is_null() {
                    String::new()
                } else {
                    format!(" -> {}", self.ty(&inner["sig"]["output"]))
                };
                format!("fn({}){output}", inputs.join(", "))
            }
            "qualified_path" => {
                let self_ty = self.ty(&inner["self_type"]);
                let name = inner["name"].as_str().unwrap_or("_");
                let args = self.generic_args(&inner["args"]);
                if inner["trait"].is_null() {
                    format!("{self_ty}::{name}{args}")
                } else {
                    format!(
                        "<{self_ty} as {}>::{name}{args}",
                        self.path(&inner["trait"])
                    )
                }
            }
            "pat" => self.ty(&inner["type"]),
            other => format!("?{other}"),
        }
    }
}

/// `&self`, `&mut self`, `self` for the usual receivers; `None` for `self: Arc<Self>` and co.
fn self_param(ty: &Value) -> Option<String> {
    if ty.get("generic").and_then(Value::as_str) == Some("Self") {
        return Some("self".to_owned());
    }
    let reference = ty.get("borrowed_ref")?;
    if reference["type"].get("generic").and_then(Value::as_str) != Some("Self") {
        return None;
    }
    Some(format!("{}self", reference_prefix(reference)))
}

/// `&`, `&mut `, `&'a ` or `&'a mut ` for a `borrowed_ref` type.
fn reference_prefix(reference: &Value) -> String {
    let lifetime = reference["lifetime"]
        .as_str()
        .map(|l| format!("{l} "))
        .unwrap_or_default();
    let mutability = if reference["is_mutable"] == true {
        "mut "
    } else {
        ""
    };
    format!("&{lifetime}{mutability}")
}

fn has_attr(item: &Value, name: &str) -> bool {
    item["attrs"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|attr| attr.as_str() == Some(name))
}

fn json_object(key: &str, value: &Value) -> Value {
    let mut map = serde_json::Map::new();
    map.insert(key.to_owned(), value.clone());
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::render;

    /// A hand-written slice of rustdoc JSON: a crate `demo` with a private module defining a
    /// `#[non_exhaustive]` struct with one public field, re-exported at the root, a method and a
    /// free function that uses it; so the renderer's naming by public path is checked too.
    fn demo() -> serde_json::Value {
        json!({
            "format_version": 57,
            "root": 0,
            "paths": {"9": {"crate_id": 2, "path": ["core", "option", "Option"], "kind": "enum"}},
            "index": {
                "0": {"name": "demo", "visibility": "public", "attrs": [],
                      "inner": {"module": {"items": [1, 2, 5]}}},
                "1": {"name": "inner", "visibility": "default", "attrs": [],
                      "inner": {"module": {"items": [3]}}},
                "2": {"name": null, "visibility": "public", "attrs": [],
                      "inner": {"use": {"source": "inner::Config", "name": "Config", "id": 3, "is_glob": false}}},
                "3": {"name": "Config", "visibility": "public", "attrs": ["non_exhaustive"],
                      "inner": {"struct": {
                          "kind": {"plain": {"fields": [4], "has_stripped_fields": true}},
                          "generics": {"params": [], "where_predicates": []},
                          "impls": [6]}}},
                "4": {"name": "limit", "visibility": "public", "attrs": [],
                      "inner": {"struct_field": {"primitive": "u32"}}},
                "5": {"name": "load", "visibility": "public", "attrs": [],
                      "inner": {"function": {
                          "sig": {"inputs": [["config", {"borrowed_ref": {"lifetime": null, "is_mutable": false,
                                  "type": {"resolved_path": {"path": "Config", "id": 3, "args": null}}}}]],
                                  "output": {"resolved_path": {"path": "Option", "id": 9, "args": {"angle_bracketed": {
                                      "args": [{"type": {"primitive": "u32"}}], "constraints": []}}}},
                                  "is_c_variadic": false},
                          "generics": {"params": [], "where_predicates": []},
                          "header": {"is_const": false, "is_unsafe": false, "is_async": true, "abi": "Rust"},
                          "has_body": true}}},
                "6": {"name": null, "visibility": "default", "attrs": [],
                      "inner": {"impl": {"trait": null, "blanket_impl": null, "is_negative": false,
                          "generics": {"params": [], "where_predicates": []},
                          "for": {"resolved_path": {"path": "Config", "id": 3, "args": null}},
                          "items": [7]}}},
                "7": {"name": "limit", "visibility": "public", "attrs": [],
                      "inner": {"function": {
                          "sig": {"inputs": [["self", {"borrowed_ref": {"lifetime": null, "is_mutable": true,
                                  "type": {"generic": "Self"}}}]], "output": null, "is_c_variadic": false},
                          "generics": {"params": [], "where_predicates": []},
                          "header": {"is_const": false, "is_unsafe": false, "is_async": false, "abi": "Rust"},
                          "has_body": true}}}
            }
        })
    }

    #[test]
    fn renders_items_by_their_public_path() {
        let api = render(&demo()).unwrap();
        assert_eq!(
            api,
            "#[non_exhaustive] pub struct demo::Config { /* private fields */ }\n\
             pub async fn demo::load(config: &demo::Config) -> core::option::Option<u32>\n\
             pub demo::Config::limit: u32\n\
             pub fn demo::Config::limit(&mut self)\n"
        );
    }

    #[test]
    fn a_changed_signature_changes_the_rendering() {
        let before = render(&demo()).unwrap();
        let mut changed = demo();
        changed["index"]["4"]["inner"]["struct_field"] = json!({"primitive": "u64"});
        assert_ne!(render(&changed).unwrap(), before);
        let mut exhaustive = demo();
        exhaustive["index"]["3"]["attrs"] = json!([]);
        assert_ne!(render(&exhaustive).unwrap(), before);
    }
}
