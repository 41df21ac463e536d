//! Loading, attaching and pinning the programs, adopting existing pins, and removing
//! them all.

use std::{fs, path::Path};

use ambit_ebpf_common::{ConnKey, map_names};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, SockHash},
    programs::{
        CgroupAttachMode, CgroupSockAddr, ProgramError, ProgramInfo, SkLookup, SkMsg, SockOps,
        links::{FdLink, PinnedLink},
    },
};
use tracing::{info, warn};

use super::{Capture, CaptureError, Pins, object};
use crate::config::Config;

/// `statfs` magic of a bpf filesystem.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Names of the programs in the object.
const CONNECT4: &str = "ambit_connect4";
const CONNECT6: &str = "ambit_connect6";
const GETPEERNAME4: &str = "ambit_getpeername4";
const GETPEERNAME6: &str = "ambit_getpeername6";
const SOCK_OPS: &str = "ambit_sock_ops";
const SK_MSG: &str = "ambit_sk_msg";
const SK_LOOKUP: &str = "ambit_sk_lookup";

/// The programs attached to the cgroup, each pinned as a link of the same name.
const CGROUP_PROGRAMS: [&str; 5] = [CONNECT4, CONNECT6, GETPEERNAME4, GETPEERNAME6, SOCK_OPS];

impl Capture {
    /// Loads and attaches the capture programs, or adopts them if they are pinned.
    ///
    /// # Errors
    /// [`CaptureError`] saying which step failed; a verifier rejection carries the
    /// verifier log.
    pub fn install(config: &Config) -> Result<Self, CaptureError> {
        preflight(config)?;
        let pins = Pins::new(&config.bpffs_dir);
        let mut capture = if CGROUP_PROGRAMS.iter().all(|p| pins.link(p).exists()) {
            info!(bpffs = %pins.root().display(), "adopting the pinned capture programs");
            adopt(pins)?
        } else {
            info!(bpffs = %pins.root().display(), cgroup = %config.cgroup.display(), "loading the capture programs");
            load_and_attach(pins, config)?
        };
        capture.set_sockmap_acceleration(config.sockmap_acceleration)?;
        Ok(capture)
    }
}

fn preflight(config: &Config) -> Result<(), CaptureError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(CaptureError::NotRoot);
    }
    object::embedded()?;
    let parent = config.bpffs_dir.parent().unwrap_or_else(|| Path::new("/"));
    if statfs_magic(parent) != Some(BPF_FS_MAGIC) {
        return Err(CaptureError::NoBpffs {
            path: parent.to_owned(),
        });
    }
    for dir in [
        config.bpffs_dir.join("maps"),
        config.bpffs_dir.join("progs"),
        config.bpffs_dir.join("links"),
        config.bpffs_dir.join("pods"),
    ] {
        fs::create_dir_all(&dir).map_err(|error| CaptureError::Io {
            action: "cannot create",
            path: dir.clone(),
            error,
        })?;
    }
    Ok(())
}

fn statfs_magic(path: &Path) -> Option<i64> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: an all-zero statfs is a valid value to be overwritten by the kernel.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is NUL-terminated and `stat` is valid for writes.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &raw mut stat) };
    (rc == 0).then_some(stat.f_type)
}

fn load_and_attach(pins: Pins, config: &Config) -> Result<Capture, CaptureError> {
    // Pins left from a half-finished install would keep old programs attached.
    remove_stale_pins(&pins);
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(pins.maps())
        .load(object::embedded()?)
        .map_err(CaptureError::Load)?;
    let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
        Ok(logger) => Some(logger),
        Err(error) => {
            warn!(%error, "eBPF log forwarding is off");
            None
        }
    };
    let cgroup = fs::File::open(&config.cgroup).map_err(|error| CaptureError::Cgroup {
        path: config.cgroup.clone(),
        error,
    })?;
    for name in [CONNECT4, CONNECT6, GETPEERNAME4, GETPEERNAME6] {
        attach_to_cgroup::<CgroupSockAddr>(&mut ebpf, &pins, &cgroup, name)?;
    }
    attach_to_cgroup::<SockOps>(&mut ebpf, &pins, &cgroup, SOCK_OPS)?;

    attach_sk_msg(&mut ebpf, &pins)?;

    let sk_lookup: &mut SkLookup = program_mut(&mut ebpf, SK_LOOKUP)?;
    sk_lookup.load().map_err(|error| CaptureError::Program {
        program: SK_LOOKUP,
        error,
    })?;
    sk_lookup
        .pin(pins.program(SK_LOOKUP))
        .map_err(|error| CaptureError::Pin {
            path: pins.program(SK_LOOKUP),
            error,
        })?;
    // The pins keep everything; `Capture` holds handles of its own, independent of `ebpf`.
    open_pinned(pins, logger)
}

/// Attaches sk_msg to the SOCKHASH. aya cannot pin this attachment (it is a
/// BPF_PROG_ATTACH to a map, not a link), but it lives as long as the map, which is
/// pinned: the link handle is deliberately leaked so dropping it does not detach.
fn attach_sk_msg(ebpf: &mut Ebpf, pins: &Pins) -> Result<(), CaptureError> {
    let map_fd = {
        let map = ebpf
            .map(map_names::LOCAL_SOCKETS)
            .ok_or(CaptureError::Missing {
                kind: "map",
                name: map_names::LOCAL_SOCKETS,
            })?;
        let sock_hash: SockHash<&MapData, ConnKey> =
            SockHash::try_from(map).map_err(|error| CaptureError::Map {
                name: map_names::LOCAL_SOCKETS,
                error,
            })?;
        sock_hash
            .fd()
            .try_clone()
            .map_err(|error| CaptureError::Io {
                action: "cannot duplicate the fd of",
                path: pins.map(map_names::LOCAL_SOCKETS),
                error,
            })?
    };
    let sk_msg: &mut SkMsg = program_mut(ebpf, SK_MSG)?;
    sk_msg.load().map_err(|error| CaptureError::Program {
        program: SK_MSG,
        error,
    })?;
    let id = sk_msg
        .attach(&map_fd)
        .map_err(|error| CaptureError::Program {
            program: SK_MSG,
            error,
        })?;
    let link = sk_msg
        .take_link(id)
        .map_err(|error| CaptureError::Program {
            program: SK_MSG,
            error,
        })?;
    std::mem::forget(link);
    sk_msg
        .pin(pins.program(SK_MSG))
        .map_err(|error| CaptureError::Pin {
            path: pins.program(SK_MSG),
            error,
        })
}

/// The cgroup program types' common shape (aya gives them the same methods but no
/// common trait).
trait CgroupProgram {
    fn load(&mut self) -> Result<(), ProgramError>;
    /// Attaches to `cgroup` as a bpf link and takes the link out of aya's keeping.
    fn attach_link(&mut self, cgroup: &fs::File) -> Result<FdLink, LinkError>;
    fn pin(&mut self, path: &Path) -> Result<(), aya::pin::PinError>;
}

/// A link error or a program error, from [`CgroupProgram::attach_link`].
enum LinkError {
    Program(ProgramError),
    Link(aya::programs::links::LinkError),
}

macro_rules! cgroup_program {
    ($program:ty) => {
        impl CgroupProgram for $program {
            fn load(&mut self) -> Result<(), ProgramError> {
                <$program>::load(self)
            }

            fn attach_link(&mut self, cgroup: &fs::File) -> Result<FdLink, LinkError> {
                // Links (bpf_link_create) coexist with other programs on the same hook;
                // "single" only means "no legacy multi-attach flag".
                let id = <$program>::attach(self, cgroup, CgroupAttachMode::Single)
                    .map_err(LinkError::Program)?;
                self.take_link(id)
                    .map_err(LinkError::Program)?
                    .try_into()
                    .map_err(LinkError::Link)
            }

            fn pin(&mut self, path: &Path) -> Result<(), aya::pin::PinError> {
                <$program>::pin(self, path)
            }
        }
    };
}
cgroup_program!(CgroupSockAddr);
cgroup_program!(SockOps);

/// Loads program `name`, attaches it to `cgroup` and pins program and link.
fn attach_to_cgroup<P>(
    ebpf: &mut Ebpf,
    pins: &Pins,
    cgroup: &fs::File,
    name: &'static str,
) -> Result<(), CaptureError>
where
    P: CgroupProgram,
    for<'a> &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let program: &mut P = program_mut(ebpf, name)?;
    program.load().map_err(|error| CaptureError::Program {
        program: name,
        error,
    })?;
    let link = program.attach_link(cgroup).map_err(|error| match error {
        LinkError::Program(error) => CaptureError::Program {
            program: name,
            error,
        },
        LinkError::Link(error) => CaptureError::Link {
            path: pins.link(name),
            error,
        },
    })?;
    program
        .pin(&pins.program(name))
        .map_err(|error| CaptureError::Pin {
            path: pins.program(name),
            error,
        })?;
    link.pin(pins.link(name))
        .map_err(|error| CaptureError::Pin {
            path: pins.link(name),
            error,
        })?;
    Ok(())
}

fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, CaptureError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(CaptureError::Missing {
            kind: "program",
            name,
        })?
        .try_into()
        .map_err(|error| CaptureError::Program {
            program: name,
            error,
        })
}

fn adopt(pins: Pins) -> Result<Capture, CaptureError> {
    let logger = ProgramInfo::from_pin(pins.program(SK_LOOKUP))
        .ok()
        .and_then(|info| aya_log::EbpfLogger::init_from_id(info.id()).ok());
    open_pinned(pins, logger)
}

/// A [`Capture`] on the pinned `sk_lookup` program and the maps the agent writes.
fn open_pinned(
    pins: Pins,
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
) -> Result<Capture, CaptureError> {
    let sk_lookup =
        SkLookup::from_pin(pins.program(SK_LOOKUP)).map_err(|error| CaptureError::Program {
            program: SK_LOOKUP,
            error,
        })?;
    let (enrolled, settings) = writable_maps(&pins)?;
    Ok(Capture {
        pins,
        enrolled,
        settings,
        sk_lookup,
        logger,
    })
}

type WritableMaps = (
    HashMap<MapData, u64, u32>,
    Array<MapData, ambit_ebpf_common::Settings>,
);

fn writable_maps(pins: &Pins) -> Result<WritableMaps, CaptureError> {
    let enrolled =
        HashMap::try_from(pinned_map(pins, map_names::ENROLLED_NETNS)?).map_err(|error| {
            CaptureError::Map {
                name: map_names::ENROLLED_NETNS,
                error,
            }
        })?;
    let settings = Array::try_from(pinned_map(pins, map_names::SETTINGS)?).map_err(|error| {
        CaptureError::Map {
            name: map_names::SETTINGS,
            error,
        }
    })?;
    Ok((enrolled, settings))
}

/// Opens a pinned map by name.
///
/// # Errors
/// [`CaptureError::Map`] when the pin is missing or not a supported map.
pub fn pinned_map(pins: &Pins, name: &'static str) -> Result<Map, CaptureError> {
    MapData::from_pin(pins.map(name))
        .and_then(Map::from_map_data)
        .map_err(|error| CaptureError::Map { name, error })
}

/// Removes link and program pins a half-finished install left behind (maps stay: they
/// hold the enrolled pods and are reused by name).
fn remove_stale_pins(pins: &Pins) {
    for dir in [pins.links(), pins.programs()] {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for path in entries.filter_map(Result::ok).map(|e| e.path()) {
            if let Err(error) = fs::remove_file(&path) {
                warn!(path = %path.display(), %error, "cannot remove a stale pin");
            }
        }
    }
}

/// Removes every pin under `bpffs_dir`: links (detaching the programs from the cgroup
/// and from pod namespaces), programs and maps, then the directory itself.
///
/// # Errors
/// [`CaptureError::Io`] for a pin that cannot be removed; the rest are still removed.
pub fn uninstall(bpffs_dir: &Path) -> Result<(), CaptureError> {
    if !bpffs_dir.exists() {
        return Ok(());
    }
    let pins = Pins::new(bpffs_dir);
    let mut first_error = None;
    // Links first, so nothing captures while the maps go away.
    for dir in [pins.links(), pins.pods(), pins.programs(), pins.maps()] {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let result = if dir == pins.links() || dir == pins.pods() {
                PinnedLink::from_pin(&path)
                    .map_err(|e| std::io::Error::other(e.to_string()))
                    .and_then(|link| link.unpin().map(drop))
            } else {
                fs::remove_file(&path)
            };
            if let Err(error) = result {
                warn!(path = %path.display(), %error, "cannot remove pin");
                first_error.get_or_insert(CaptureError::Io {
                    action: "cannot remove",
                    path,
                    error,
                });
            }
        }
        let _ = fs::remove_dir(&dir);
    }
    if let Err(error) = fs::remove_dir(bpffs_dir) {
        first_error.get_or_insert(CaptureError::Io {
            action: "cannot remove",
            path: bpffs_dir.to_owned(),
            error,
        });
    }
    first_error.map_or(Ok(()), Err)
}
