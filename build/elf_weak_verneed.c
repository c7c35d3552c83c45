/* Marks one GLIBCXX version requirement of an ELF64 little-endian shared object as weak (VER_FLG_WEAK), so the
   dynamic loader accepts it on a system whose libstdc++ lacks that version node. See
   shared docs torchsharp-on-debian12.md. Usage: elf_weak_verneed FILE VERSION. Idempotent. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>

static uint16_t u16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t u32(const unsigned char *p) { return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24); }
static uint64_t u64(const unsigned char *p) { return (uint64_t)u32(p) | ((uint64_t)u32(p + 4) << 32); }

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s FILE VERSION\n", argv[0]); return 2; }
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 1; }
    fseek(f, 0, SEEK_END); long size = ftell(f); fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)size);
    if (!b || fread(b, 1, (size_t)size, f) != (size_t)size) { fprintf(stderr, "read failed: %s\n", argv[1]); return 1; }
    fclose(f);
    if (size < 64 || memcmp(b, "\177ELF", 4) != 0 || b[4] != 2 || b[5] != 1) { fprintf(stderr, "%s: not an ELF64 LE file\n", argv[1]); return 1; }
    uint64_t shoff = u64(b + 0x28);
    uint16_t shentsize = u16(b + 0x3A), shnum = u16(b + 0x3C);
    int patched = 0, found = 0;
    for (uint16_t i = 0; i < shnum; i++) {
        const unsigned char *sh = b + shoff + (uint64_t)i * shentsize;
        if (u32(sh + 4) != 0x6ffffffe) continue; /* SHT_GNU_verneed */
        uint64_t off = u64(sh + 24);
        uint32_t link = u32(sh + 40), count = u32(sh + 44);
        const unsigned char *strsh = b + shoff + (uint64_t)link * shentsize;
        uint64_t stroff = u64(strsh + 24);
        uint64_t vn = off;
        for (uint32_t n = 0; n < count; n++) {
            uint16_t cnt = u16(b + vn + 2);
            uint32_t aux = u32(b + vn + 8), next = u32(b + vn + 12);
            uint64_t va = vn + aux;
            for (uint16_t k = 0; k < cnt; k++) {
                const char *name = (const char *)(b + stroff + u32(b + va + 8));
                if (strcmp(name, argv[2]) == 0) {
                    found = 1;
                    uint16_t flags = u16(b + va + 4);
                    if (!(flags & 0x2)) { flags |= 0x2; b[va + 4] = (unsigned char)(flags & 0xff); b[va + 5] = (unsigned char)(flags >> 8); patched = 1; }
                }
                uint32_t anext = u32(b + va + 12);
                if (!anext) break;
                va += anext;
            }
            if (!next) break;
            vn += next;
        }
    }
    if (patched) {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.weak-tmp", argv[1]);
        FILE *o = fopen(tmp, "wb");
        if (!o || fwrite(b, 1, (size_t)size, o) != (size_t)size || fclose(o) != 0) { fprintf(stderr, "write failed: %s\n", tmp); return 1; }
        if (rename(tmp, argv[1]) != 0) { perror("rename"); return 1; }
    }
    printf("%s: %s %s\n", argv[1], argv[2], !found ? "not required" : patched ? "marked weak" : "already weak");
    return 0;
}
