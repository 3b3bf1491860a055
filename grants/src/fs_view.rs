//! `wasi:filesystem` as wasmtime-wasi implements it, watched: every call goes to wasmtime's
//! own host, and a path it refuses as a grant refusal (a `..` or symlink that leads out of a
//! volume, a write to a `readOnly` one: both `not-permitted`) becomes a denial report naming
//! the mount and the field. Which mount a descriptor belongs to is known from
//! `get-directories` (the preopens) and inherited by what `open-at` opens under it.
//!
//! A path outside every volume never reaches the host (the guest's libc maps absolute paths
//! to a preopen, and fails there), so it cannot be reported; `EACCES` from file modes is the
//! file's, not the grant's, and is not reported either.

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::component::Resource;
use wasmtime_wasi::filesystem::WasiFilesystemCtxView;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    Descriptor, ErrorCode, HostDescriptor, HostDirectoryEntryStream,
};
use wasmtime_wasi::p2::bindings::filesystem::{preopens, types};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, FsError, FsResult};

use super::fs::FsMount;
use super::report::{Action, Denial, Reporter};

/// What the filesystem capability keeps per instance to name refusals.
pub struct FsState {
    pub container: String,
    pub mounts: Vec<FsMount>,
    /// `spec.containers[i].volumeMounts`.
    pub field: String,
    pub reports: Arc<Reporter>,
    /// Descriptor (by rep) -> its mount (by index) and its path as the guest sees it. Bounded
    /// by the resource table: entries go with their descriptors.
    origin: HashMap<u32, (usize, String)>,
    /// Refuse every symlink the guest would make (`FsGrant::no_symlinks`).
    pub no_symlinks: bool,
}

impl FsState {
    pub fn new(
        container: &str,
        mounts: Vec<FsMount>,
        field: String,
        reports: Arc<Reporter>,
    ) -> Self {
        FsState {
            container: container.to_string(),
            mounts,
            field,
            reports,
            origin: HashMap::new(),
            no_symlinks: false,
        }
    }

    /// Reports a refused path under descriptor `fd` if the refusal is the grant's.
    fn note<T>(&self, fd: u32, path: &str, writes: bool, result: &FsResult<T>) {
        let Err(err) = result else { return };
        if !matches!(err.downcast_ref(), Some(ErrorCode::NotPermitted)) {
            return;
        }
        let Some((mount, dir)) = self.origin.get(&fd) else {
            return;
        };
        let Some(m) = self.mounts.get(*mount) else {
            return;
        };
        let target = format!("{}/{path}", dir.trim_end_matches('/'));
        let denial = match (m.read_only, writes) {
            (true, true) => Denial {
                action: Action::Write,
                target,
                field: format!("{}[{mount}].readOnly", self.field),
                reason: Some(format!("volume \"{}\" is mounted read-only", m.volume)),
            },
            _ => Denial {
                action: Action::Open,
                target,
                field: format!("{}[{mount}]", self.field),
                reason: Some(format!(
                    "the path leads out of volume \"{}\" (mounted at {})",
                    m.volume, m.guest
                )),
            },
        };
        self.reports.deny(&self.container, denial);
    }

    /// Under `--audit`: which volumes the sidecar read and wrote (a volume never written could
    /// be mounted `readOnly`).
    fn used(&self, fd: u32, writes: bool) {
        if !self.reports.auditing() {
            return;
        }
        if let Some(m) = self.origin.get(&fd).and_then(|(i, _)| self.mounts.get(*i)) {
            self.reports.used(
                &self.container,
                super::report::Use {
                    class: if writes { "write" } else { "read" }.into(),
                    target: m.volume.clone(),
                    via: None,
                },
            );
        }
    }

    fn child(&mut self, parent: u32, path: &str, child: u32) {
        if let Some((mount, dir)) = self.origin.get(&parent).cloned() {
            let path = format!("{}/{path}", dir.trim_end_matches('/'));
            self.origin.insert(child, (mount, path));
        }
    }
}

/// wasmtime's filesystem host and this capability's state, together.
pub struct FsView<'a> {
    pub inner: WasiFilesystemCtxView<'a>,
    pub state: &'a mut FsState,
}

pub struct HasFs;

impl wasmtime::component::HasData for HasFs {
    type Data<'a> = FsView<'a>;
}

type Inner<'a> = WasiFilesystemCtxView<'a>;

impl preopens::Host for FsView<'_> {
    fn get_directories(&mut self) -> wasmtime::Result<Vec<(Resource<Descriptor>, String)>> {
        let dirs = <Inner<'_> as preopens::Host>::get_directories(&mut self.inner)?;
        for (fd, guest) in &dirs {
            if let Some(i) = self.state.mounts.iter().position(|m| &m.guest == guest) {
                self.state.origin.insert(fd.rep(), (i, guest.clone()));
            }
        }
        Ok(dirs)
    }
}

impl types::Host for FsView<'_> {
    fn convert_error_code(&mut self, err: FsError) -> wasmtime::Result<ErrorCode> {
        <Inner<'_> as types::Host>::convert_error_code(&mut self.inner, err)
    }

    fn filesystem_error_code(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        <Inner<'_> as types::Host>::filesystem_error_code(&mut self.inner, err)
    }
}

/// Forwards a descriptor method to wasmtime's host unchanged.
macro_rules! forward {
    ($(async fn $name:ident(&mut self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        $(
            async fn $name(&mut self $(, $arg: $ty)*) -> $ret {
                <Inner<'_> as HostDescriptor>::$name(&mut self.inner $(, $arg)*).await
            }
        )*
    };
}

impl HostDescriptor for FsView<'_> {
    forward! {
        async fn advise(&mut self, fd: Resource<Descriptor>, offset: types::Filesize, len: types::Filesize, advice: types::Advice) -> FsResult<()>;
        async fn sync_data(&mut self, fd: Resource<Descriptor>) -> FsResult<()>;
        async fn get_flags(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorFlags>;
        async fn get_type(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorType>;
        async fn set_size(&mut self, fd: Resource<Descriptor>, size: types::Filesize) -> FsResult<()>;
        async fn set_times(&mut self, fd: Resource<Descriptor>, atim: types::NewTimestamp, mtim: types::NewTimestamp) -> FsResult<()>;
        async fn write(&mut self, fd: Resource<Descriptor>, buf: Vec<u8>, offset: types::Filesize) -> FsResult<types::Filesize>;
        async fn read_directory(&mut self, fd: Resource<Descriptor>) -> FsResult<Resource<types::DirectoryEntryStream>>;
        async fn sync(&mut self, fd: Resource<Descriptor>) -> FsResult<()>;
        async fn stat(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorStat>;
        async fn is_same_object(&mut self, a: Resource<Descriptor>, b: Resource<Descriptor>) -> wasmtime::Result<bool>;
        async fn metadata_hash(&mut self, fd: Resource<Descriptor>) -> FsResult<types::MetadataHashValue>;
    }

    /// Bytes the page cache holds come back on this thread (`fs_cached`); the rest the usual
    /// way, through wasmtime's blocking pool.
    async fn read(
        &mut self,
        fd: Resource<Descriptor>,
        len: types::Filesize,
        offset: types::Filesize,
    ) -> FsResult<(Vec<u8>, bool)> {
        if let Ok(Descriptor::File(f)) = self.inner.table.get(&fd) {
            let now = super::fs_cached::is_regular(&f.file)
                .then(|| super::fs_cached::read_now(&f.file, len, offset));
            if let Some(bytes) = now.flatten() {
                let end = bytes.is_empty();
                return Ok((bytes, end));
            }
        }
        <Inner<'_> as HostDescriptor>::read(&mut self.inner, fd, len, offset).await
    }

    async fn create_directory_at(
        &mut self,
        fd: Resource<Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let rep = fd.rep();
        let r =
            <Inner<'_> as HostDescriptor>::create_directory_at(&mut self.inner, fd, path.clone())
                .await;
        self.state.note(rep, &path, true, &r);
        if r.is_ok() {
            self.state.used(rep, true);
        }
        r
    }

    async fn stat_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::DescriptorStat> {
        let rep = fd.rep();
        let r =
            <Inner<'_> as HostDescriptor>::stat_at(&mut self.inner, fd, path_flags, path.clone())
                .await;
        self.state.note(rep, &path, false, &r);
        r
    }

    async fn set_times_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        let rep = fd.rep();
        let r = <Inner<'_> as HostDescriptor>::set_times_at(
            &mut self.inner,
            fd,
            path_flags,
            path.clone(),
            atim,
            mtim,
        )
        .await;
        self.state.note(rep, &path, true, &r);
        r
    }

    async fn link_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_path_flags: types::PathFlags,
        old_path: String,
        new_descriptor: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        let (rep, new_rep) = (fd.rep(), new_descriptor.rep());
        let r = <Inner<'_> as HostDescriptor>::link_at(
            &mut self.inner,
            fd,
            old_path_flags,
            old_path.clone(),
            new_descriptor,
            new_path.clone(),
        )
        .await;
        self.state.note(rep, &old_path, false, &r);
        self.state.note(new_rep, &new_path, true, &r);
        r
    }

    async fn open_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        oflags: types::OpenFlags,
        flags: types::DescriptorFlags,
    ) -> FsResult<Resource<Descriptor>> {
        let rep = fd.rep();
        let writes = oflags.intersects(types::OpenFlags::CREATE | types::OpenFlags::TRUNCATE)
            || flags.intersects(
                types::DescriptorFlags::WRITE | types::DescriptorFlags::MUTATE_DIRECTORY,
            );
        let r = <Inner<'_> as HostDescriptor>::open_at(
            &mut self.inner,
            fd,
            path_flags,
            path.clone(),
            oflags,
            flags,
        )
        .await;
        self.state.note(rep, &path, writes, &r);
        if let Ok(child) = &r {
            self.state.used(rep, writes);
            self.state.child(rep, &path, child.rep());
        }
        r
    }

    fn drop(&mut self, fd: Resource<Descriptor>) -> wasmtime::Result<()> {
        self.state.origin.remove(&fd.rep());
        <Inner<'_> as HostDescriptor>::drop(&mut self.inner, fd)
    }

    async fn readlink_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<String> {
        let rep = fd.rep();
        let r = <Inner<'_> as HostDescriptor>::readlink_at(&mut self.inner, fd, path.clone()).await;
        self.state.note(rep, &path, false, &r);
        r
    }

    async fn remove_directory_at(
        &mut self,
        fd: Resource<Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let rep = fd.rep();
        let r =
            <Inner<'_> as HostDescriptor>::remove_directory_at(&mut self.inner, fd, path.clone())
                .await;
        self.state.note(rep, &path, true, &r);
        if r.is_ok() {
            self.state.used(rep, true);
        }
        r
    }

    async fn rename_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_path: String,
        new_fd: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        let (rep, new_rep) = (fd.rep(), new_fd.rep());
        let r = <Inner<'_> as HostDescriptor>::rename_at(
            &mut self.inner,
            fd,
            old_path.clone(),
            new_fd,
            new_path.clone(),
        )
        .await;
        self.state.note(rep, &old_path, true, &r);
        self.state.note(new_rep, &new_path, true, &r);
        if r.is_ok() {
            self.state.used(new_rep, true);
        }
        r
    }

    async fn symlink_at(
        &mut self,
        fd: Resource<Descriptor>,
        src_path: String,
        dest_path: String,
    ) -> FsResult<()> {
        let rep = fd.rep();
        if self.state.no_symlinks {
            let target = match self.state.origin.get(&rep) {
                Some((_, dir)) => format!("{}/{dest_path}", dir.trim_end_matches('/')),
                None => dest_path,
            };
            self.state.reports.deny(
                &self.state.container,
                Denial {
                    action: Action::Write,
                    target,
                    field: self.state.field.clone(),
                    reason: Some(
                        "a sidecar in a container of its own makes no symlinks: the pod's \
                         other containers mount its volumes without nosymfollow, and would \
                         follow them"
                            .into(),
                    ),
                },
            );
            return Err(ErrorCode::NotPermitted.into());
        }
        let r = <Inner<'_> as HostDescriptor>::symlink_at(
            &mut self.inner,
            fd,
            src_path,
            dest_path.clone(),
        )
        .await;
        self.state.note(rep, &dest_path, true, &r);
        if r.is_ok() {
            self.state.used(rep, true);
        }
        r
    }

    async fn unlink_file_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<()> {
        let rep = fd.rep();
        let r =
            <Inner<'_> as HostDescriptor>::unlink_file_at(&mut self.inner, fd, path.clone()).await;
        self.state.note(rep, &path, true, &r);
        if r.is_ok() {
            self.state.used(rep, true);
        }
        r
    }

    /// wasmtime's file stream with cached reads done at once (`fs_cached::FileReader`).
    fn read_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynInputStream>> {
        // As wasmtime: a descriptor that is not in the table traps, a directory is
        // is-directory (POSIX EISDIR on read).
        let file = match self.inner.table.get(&fd)? {
            Descriptor::File(f) => f.file.clone(),
            Descriptor::Dir(_) => return Err(ErrorCode::IsDirectory.into()),
        };
        let reader: DynInputStream = Box::new(super::fs_cached::FileReader::new(file, offset));
        Ok(self.inner.table.push(reader)?)
    }

    fn write_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynOutputStream>> {
        <Inner<'_> as HostDescriptor>::write_via_stream(&mut self.inner, fd, offset)
    }

    fn append_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<Resource<DynOutputStream>> {
        <Inner<'_> as HostDescriptor>::append_via_stream(&mut self.inner, fd)
    }

    async fn metadata_hash_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::MetadataHashValue> {
        let rep = fd.rep();
        let r = <Inner<'_> as HostDescriptor>::metadata_hash_at(
            &mut self.inner,
            fd,
            path_flags,
            path.clone(),
        )
        .await;
        self.state.note(rep, &path, false, &r);
        r
    }
}

impl HostDirectoryEntryStream for FsView<'_> {
    async fn read_directory_entry(
        &mut self,
        stream: Resource<types::DirectoryEntryStream>,
    ) -> FsResult<Option<types::DirectoryEntry>> {
        <Inner<'_> as HostDirectoryEntryStream>::read_directory_entry(&mut self.inner, stream).await
    }

    fn drop(&mut self, stream: Resource<types::DirectoryEntryStream>) -> wasmtime::Result<()> {
        <Inner<'_> as HostDirectoryEntryStream>::drop(&mut self.inner, stream)
    }
}
