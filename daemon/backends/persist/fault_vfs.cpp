// The fault-injecting VFS (see fault_vfs.hpp). Each file we open is the
// default VFS's file placed right after our own header, and every method
// forwards to it; only xWrite, xSync and xTruncate first ask whether to fail.
#include "daemon/backends/persist/fault_vfs.hpp"

#include <cstdio>
#include <cstring>
#include <mutex>
#include <sqlite3.h>
#include <sys/stat.h>

namespace cbd {

namespace {

constexpr const char* kVfsName = "cbd-fault";

struct FaultFile {
    sqlite3_file base; // must come first: SQLite sees a FaultFile as a sqlite3_file
    sqlite3_file* inner() { return reinterpret_cast<sqlite3_file*>(this + 1); }
};

sqlite3_vfs g_vfs;
sqlite3_vfs* g_default = nullptr;
sqlite3_io_methods g_methods;
std::string g_trigger;
std::mutex g_trigger_mutex; // the batch writer thread and the loop both write

// 0 when writes may proceed, else the error to return.
int injected_error() {
    std::string trigger;
    {
        std::lock_guard lock(g_trigger_mutex);
        trigger = g_trigger;
    }
    struct stat st {};
    if (trigger.empty() || ::stat(trigger.c_str(), &st) != 0)
        return SQLITE_OK;
    char first[8] = {};
    if (FILE* f = std::fopen(trigger.c_str(), "r")) {
        if (std::fgets(first, sizeof first, f) == nullptr)
            first[0] = '\0';
        std::fclose(f);
    }
    return std::strncmp(first, "full", 4) == 0 ? SQLITE_FULL : SQLITE_IOERR_WRITE;
}

sqlite3_file* in(sqlite3_file* f) {
    return reinterpret_cast<FaultFile*>(f)->inner();
}

int f_close(sqlite3_file* f) {
    return in(f)->pMethods->xClose(in(f));
}
int f_read(sqlite3_file* f, void* buf, int n, sqlite3_int64 off) {
    return in(f)->pMethods->xRead(in(f), buf, n, off);
}
int f_write(sqlite3_file* f, const void* buf, int n, sqlite3_int64 off) {
    if (int rc = injected_error())
        return rc;
    return in(f)->pMethods->xWrite(in(f), buf, n, off);
}
int f_truncate(sqlite3_file* f, sqlite3_int64 size) {
    if (int rc = injected_error())
        return rc == SQLITE_FULL ? SQLITE_FULL : SQLITE_IOERR_TRUNCATE;
    return in(f)->pMethods->xTruncate(in(f), size);
}
int f_sync(sqlite3_file* f, int flags) {
    if (int rc = injected_error())
        return rc == SQLITE_FULL ? SQLITE_FULL : SQLITE_IOERR_FSYNC;
    return in(f)->pMethods->xSync(in(f), flags);
}
int f_file_size(sqlite3_file* f, sqlite3_int64* size) {
    return in(f)->pMethods->xFileSize(in(f), size);
}
int f_lock(sqlite3_file* f, int level) {
    return in(f)->pMethods->xLock(in(f), level);
}
int f_unlock(sqlite3_file* f, int level) {
    return in(f)->pMethods->xUnlock(in(f), level);
}
int f_check_reserved(sqlite3_file* f, int* out) {
    return in(f)->pMethods->xCheckReservedLock(in(f), out);
}
int f_file_control(sqlite3_file* f, int op, void* arg) {
    return in(f)->pMethods->xFileControl(in(f), op, arg);
}
int f_sector_size(sqlite3_file* f) {
    return in(f)->pMethods->xSectorSize(in(f));
}
int f_device_characteristics(sqlite3_file* f) {
    return in(f)->pMethods->xDeviceCharacteristics(in(f));
}
int f_shm_map(sqlite3_file* f, int page, int size, int extend, void volatile** out) {
    return in(f)->pMethods->xShmMap(in(f), page, size, extend, out);
}
int f_shm_lock(sqlite3_file* f, int offset, int n, int flags) {
    return in(f)->pMethods->xShmLock(in(f), offset, n, flags);
}
void f_shm_barrier(sqlite3_file* f) {
    in(f)->pMethods->xShmBarrier(in(f));
}
int f_shm_unmap(sqlite3_file* f, int remove) {
    return in(f)->pMethods->xShmUnmap(in(f), remove);
}
int f_fetch(sqlite3_file* f, sqlite3_int64 off, int n, void** out) {
    return in(f)->pMethods->xFetch(in(f), off, n, out);
}
int f_unfetch(sqlite3_file* f, sqlite3_int64 off, void* p) {
    return in(f)->pMethods->xUnfetch(in(f), off, p);
}

int f_open(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* file, int flags, int* out_flags) {
    auto* ff = reinterpret_cast<FaultFile*>(file);
    ff->base.pMethods = nullptr;
    int rc = g_default->xOpen(g_default, name, ff->inner(), flags, out_flags);
    // SQLite calls xClose only when pMethods is set: leave it null on failure.
    if (rc == SQLITE_OK && ff->inner()->pMethods != nullptr)
        ff->base.pMethods = &g_methods;
    return rc;
}

int f_delete(sqlite3_vfs*, const char* name, int sync_dir) {
    return g_default->xDelete(g_default, name, sync_dir);
}
int f_access(sqlite3_vfs*, const char* name, int flags, int* out) {
    return g_default->xAccess(g_default, name, flags, out);
}
int f_full_pathname(sqlite3_vfs*, const char* name, int n, char* out) {
    return g_default->xFullPathname(g_default, name, n, out);
}

} // namespace

const char* register_fault_vfs(const std::string& trigger_file) {
    {
        std::lock_guard lock(g_trigger_mutex);
        g_trigger = trigger_file;
    }
    if (g_default != nullptr)
        return kVfsName;
    g_default = sqlite3_vfs_find(nullptr);
    g_vfs = *g_default; // time, randomness, sleep and the rest as the default
    g_vfs.pNext = nullptr;
    g_vfs.zName = kVfsName;
    g_vfs.szOsFile = static_cast<int>(sizeof(FaultFile)) + g_default->szOsFile;
    g_vfs.xOpen = f_open;
    g_vfs.xDelete = f_delete;
    g_vfs.xAccess = f_access;
    g_vfs.xFullPathname = f_full_pathname;
    // The system calls hooks would bypass us; this VFS does not offer them.
    g_vfs.xSetSystemCall = nullptr;
    g_vfs.xGetSystemCall = nullptr;
    g_vfs.xNextSystemCall = nullptr;

    g_methods = sqlite3_io_methods{};
    g_methods.iVersion = 3;
    g_methods.xClose = f_close;
    g_methods.xRead = f_read;
    g_methods.xWrite = f_write;
    g_methods.xTruncate = f_truncate;
    g_methods.xSync = f_sync;
    g_methods.xFileSize = f_file_size;
    g_methods.xLock = f_lock;
    g_methods.xUnlock = f_unlock;
    g_methods.xCheckReservedLock = f_check_reserved;
    g_methods.xFileControl = f_file_control;
    g_methods.xSectorSize = f_sector_size;
    g_methods.xDeviceCharacteristics = f_device_characteristics;
    g_methods.xShmMap = f_shm_map;
    g_methods.xShmLock = f_shm_lock;
    g_methods.xShmBarrier = f_shm_barrier;
    g_methods.xShmUnmap = f_shm_unmap;
    g_methods.xFetch = f_fetch;
    g_methods.xUnfetch = f_unfetch;
    sqlite3_vfs_register(&g_vfs, /*makeDflt=*/0);
    return kVfsName;
}

} // namespace cbd
