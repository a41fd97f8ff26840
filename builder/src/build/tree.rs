//! The layer being assembled, a strict tree: paths in a view (glob, walk), directories
//! mirrored from the stage, entries copied from a view without following or opening what
//! must not be (symlinks copied as links, devices and FIFOs made anew), and never written
//! through a symlink an earlier source put there.

#![deny(clippy::disallowed_methods)]

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use reg_untrusted::{is_symlink_refusal, set_mode, set_mtime, set_owner, Node, Tree};

use crate::fsview::View;

pub(super) fn parent(rel: &str) -> &str {
    rel.rsplit_once('/').map_or("", |(p, _)| p)
}

/// Sources named by a pattern (`*`, `?`, `[…]` within path elements), sorted.
pub(super) fn glob(view: &View, pattern: &str) -> Vec<String> {
    let comps: Vec<&str> = pattern
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let mut found = vec![String::new()];
    for c in comps {
        let mut next = Vec::new();
        for base in &found {
            if c.contains(['*', '?', '[']) {
                let Ok(g) = globset::GlobBuilder::new(c)
                    .literal_separator(true)
                    .build()
                    .map(|g| g.compile_matcher())
                else {
                    continue;
                };
                for name in view.list(base) {
                    if g.is_match(&name) {
                        next.push(join(base, &name));
                    }
                }
            } else if c == ".." {
                next.push(parent(base).to_string());
            } else {
                let p = join(base, c);
                if view.find(&p).is_some() {
                    next.push(p);
                }
            }
        }
        found = next;
    }
    found.sort();
    found.dedup();
    found.retain(|f| !f.is_empty());
    found
}

pub(super) fn join(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else {
        format!("{base}/{name}")
    }
}

/// Visits `rel` and everything below it (symlinks not followed), in name order.
pub(super) fn walk(view: &View, rel: &str, f: &mut dyn FnMut(&str, &crate::fsview::Entry)) {
    if let Some(e) = view.find(rel) {
        walk_entry(view, rel, &e, f);
    }
}

pub(super) fn walk_entry(
    view: &View,
    rel: &str,
    e: &crate::fsview::Entry,
    f: &mut dyn FnMut(&str, &crate::fsview::Entry),
) {
    f(rel, e);
    if e.meta.is_dir() {
        for (name, child) in view.entries(rel) {
            walk_entry(view, &join(rel, &name), &child, f);
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct CopyOpts {
    pub(super) chown: Option<(u32, u32)>,
    pub(super) chmod: Option<u32>,
    /// From a stage or an image, owners are kept; from the context they become root's.
    pub(super) keep_owner: bool,
}

/// What went wrong in the layer being assembled (or with a source read into it).
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// A strict tree refused a symlink on the way to `path`.
    #[error(
        "/{path}: a symlink put there by an earlier source is in the way \
         (reg never writes through one)"
    )]
    SymlinkInTheWay { path: String },
    #[error("/{path}: cannot replace a directory with a file")]
    DirectoryInTheWay { path: String },
    /// A directory is wanted where an earlier source put a file or a symlink (`what`).
    #[error(
        "cannot copy to non-directory: /{path} ({what} put there by an earlier source; reg \
         never copies through one)"
    )]
    NotADirectory { path: String, what: &'static str },
    #[error("/{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// The error for `rel` in the layer being assembled: a strict tree's refusal of a symlink on
/// the way says what happened.
pub(super) fn at(rel: &str) -> impl Fn(std::io::Error) -> TreeError + '_ {
    move |e| {
        if is_symlink_refusal(&e) {
            TreeError::SymlinkInTheWay {
                path: rel.to_string(),
            }
        } else {
            TreeError::Io {
                path: rel.to_string(),
                source: e,
            }
        }
    }
}

/// Makes `rel` in the layer free for a new entry: whatever an earlier source left there goes,
/// unless it is a directory (`dir`: one is wanted and may stay; otherwise an error). Parents
/// are made as needed. Returns whether a directory is already there.
pub(super) fn make_room(layer: &Tree, rel: &str, dir: bool) -> Result<bool, TreeError> {
    let io = at(rel);
    match layer.symlink_metadata(rel).map_err(&io)? {
        Some(m) if m.is_dir() && dir => Ok(true),
        Some(m) if m.is_dir() => Err(TreeError::DirectoryInTheWay {
            path: rel.to_string(),
        }),
        Some(m) if dir => Err(TreeError::NotADirectory {
            path: rel.to_string(),
            what: if m.file_type().is_symlink() {
                "a symlink"
            } else {
                "a file"
            },
        }),
        Some(_) => {
            layer.remove(rel).map_err(&io)?;
            Ok(false)
        }
        None => {
            let p = parent(rel);
            if !p.is_empty() {
                layer.mkdir_all(p, 0o755).map_err(at(p))?;
            }
            Ok(false)
        }
    }
}

/// Makes a new entry at `rel` with `make` (a create that fails if anything is there); when
/// something an earlier source left is in the way, [`make_room`] and once more. The common
/// case costs no lookup.
pub(super) fn make_new<T>(
    layer: &Tree,
    rel: &str,
    make: impl Fn() -> std::io::Result<T>,
) -> Result<T, TreeError> {
    match make() {
        Ok(v) => Ok(v),
        Err(e) if is_symlink_refusal(&e) => Err(at(rel)(e)),
        Err(_) => {
            make_room(layer, rel, false)?;
            make().map_err(at(rel))
        }
    }
}

/// Makes the directory `rel` unless one is there; returns whether it was.
pub(super) fn make_dir(layer: &Tree, rel: &str) -> Result<bool, TreeError> {
    match layer.mkdir(rel, 0o700) {
        Ok(()) => Ok(false),
        Err(e) if is_symlink_refusal(&e) => Err(at(rel)(e)),
        Err(_) if make_room(layer, rel, true)? => Ok(true),
        Err(_) => layer.mkdir(rel, 0o700).map(|()| false).map_err(at(rel)),
    }
}

/// Creates `rel` and its parents in `layer` with the metadata they have in `view` (or
/// root-owned 0755 where the image has nothing), so the layer changes no existing directory.
pub(super) fn mirror_dirs(view: &View, layer: &Tree, rel: &str) -> Result<(), TreeError> {
    let mut cur = String::new();
    for c in rel.split('/').filter(|c| !c.is_empty()) {
        cur = join(&cur, c);
        if make_dir(layer, &cur)? {
            continue;
        }
        let io = at(&cur);
        let h = layer.resolve_nofollow(&cur).map_err(&io)?;
        match view.find(&cur).filter(|e| e.meta.is_dir()) {
            Some(e) => {
                set_owner(&h, e.meta.uid(), e.meta.gid()).map_err(&io)?;
                set_mode(&h, e.meta.mode() & 0o7777).map_err(&io)?;
                let _ = set_mtime(&h, e.meta.mtime(), e.meta.mtime_nsec());
            }
            None => set_mode(&h, 0o755).map_err(&io)?,
        }
    }
    Ok(())
}

/// Copies `src` of `view` (a directory: its contents) to `target` in `layer`. Only regular
/// files are read; symlinks are copied as they are, device nodes and FIFOs made anew.
pub(super) fn copy_tree(
    view: &View,
    src: &str,
    layer: &Tree,
    target: &str,
    o: &CopyOpts,
) -> Result<(), TreeError> {
    match view.find(src) {
        Some(e) => copy_entry(view, src, &e, layer, target, o),
        None => Ok(()),
    }
}

/// [`copy_tree`] of the entry `e` found at `src`.
pub(super) fn copy_entry(
    view: &View,
    src: &str,
    e: &crate::fsview::Entry,
    layer: &Tree,
    target: &str,
    o: &CopyOpts,
) -> Result<(), TreeError> {
    let io = at(target);
    let (uid, gid) = match o.chown {
        Some(ids) => ids,
        None if o.keep_owner => (e.meta.uid(), e.meta.gid()),
        None => (0, 0),
    };
    let mode = o.chmod.unwrap_or(e.meta.mode() & 0o7777);
    let (secs, nanos) = (e.meta.mtime(), e.meta.mtime_nsec());
    let ft = e.meta.file_type();
    if ft.is_dir() {
        make_dir(layer, target)?;
        let h = layer.resolve_nofollow(target).map_err(&io)?;
        // The owner first: a chown clears set-id bits.
        set_owner(&h, uid, gid).map_err(&io)?;
        set_mode(&h, mode).map_err(&io)?;
        for (name, child) in view.entries(src) {
            let (src, target) = (join(src, &name), join(target, &name));
            copy_entry(view, &src, &child, layer, &target, o)?;
        }
        let _ = set_mtime(&h, secs, nanos);
        return Ok(());
    }
    if !(ft.is_symlink() || ft.is_file() || special(&e.meta).is_some()) {
        // Sockets are not part of an image.
        return Ok(());
    }
    if ft.is_symlink() {
        let link = e.read_link().map_err(|source| TreeError::Io {
            path: src.to_string(),
            source,
        })?;
        make_new(layer, target, || layer.symlink(target, &link))?;
        let h = layer.resolve_nofollow(target).map_err(&io)?;
        set_owner(&h, uid, gid).map_err(&io)?;
    } else if ft.is_file() {
        let mut from = e.open().map_err(|source| TreeError::Io {
            path: src.to_string(),
            source,
        })?;
        let mut to = make_new(layer, target, || layer.create_file(target, mode))?;
        std::io::copy(&mut from, &mut to).map_err(&io)?;
        // The metadata through the open file (a chown clears set-id bits: the mode again).
        set_owner(&to, uid, gid).map_err(&io)?;
        if mode & 0o6000 != 0 {
            to.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(&io)?;
        }
        if let Ok(t) = e.meta.modified() {
            let _ = to.set_modified(t);
        }
    } else if let Some(node) = special(&e.meta) {
        // Never opened: a snapshot's device node is a real device of this host.
        make_new(layer, target, || layer.mknod(target, node, mode))?;
        let h = layer.resolve_nofollow(target).map_err(&io)?;
        set_owner(&h, uid, gid).map_err(&io)?;
        set_mode(&h, mode).map_err(&io)?;
        let _ = set_mtime(&h, secs, nanos);
    }
    Ok(())
}

/// The device node or FIFO `m` describes, to be made anew.
pub(super) fn special(m: &std::fs::Metadata) -> Option<Node> {
    let ft = m.file_type();
    let (major, minor) = crate::layer::dev_parts(m.rdev());
    if ft.is_char_device() {
        Some(Node::Char { major, minor })
    } else if ft.is_block_device() {
        Some(Node::Block { major, minor })
    } else if ft.is_fifo() {
        Some(Node::Fifo)
    } else {
        None
    }
}
