/*
 * Test fixture, never shipped: a bcryptprimitives.dll for Wine 8.0.
 *
 * Rust's std on Windows takes its random bytes (HashMap keys, ...) from
 * ProcessPrng in bcryptprimitives.dll, which Windows 10 and later have and
 * Wine 8.0 (Debian bookworm) does not: without it tokend.exe exits at start.
 * tests/tests/windows.rs builds this file with
 *
 *     x86_64-w64-mingw32-gcc -shared -o bcryptprimitives.dll bcryptprimitives.c -ladvapi32
 *
 * and puts the DLL beside token.exe and tokend.exe in the test's own copy of
 * them. ProcessPrng is documented as never failing; RtlGenRandom
 * (SystemFunction036, advapi32) is the older system generator Wine has.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG n = length > 0x40000000 ? 0x40000000 : (ULONG)length;
        if (!SystemFunction036(data, n))
            return FALSE;
        data += n;
        length -= n;
    }
    return TRUE;
}
