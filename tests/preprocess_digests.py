"""Content digests of processed files made from the Criteo sample by every mode, as the
code before the hash-table dictionary (issue 11) wrote them: any later change to the
processed output of these modes shows here."""
import gzip
import hashlib
import os

import h5py
import numpy as np

MODES = {"dict": {}, "dict_mir": dict(max_ind_range=1000),
         "dict_t3": dict(frequency_threshold=3),
         "dict_mir_t2": dict(max_ind_range=5000, frequency_threshold=2),
         "hash": dict(encoding="hash", max_ind_range=1000)}
DAY_BOUNDS = [(0, 4000), (4000, 7000), (7000, 10000)]
# recorded with the code of commit 0ea613a (sorted-key dictionary), block_bytes=1 << 18
RECORDED = {
    "kaggle/dict": "4a16e0a4cbe3a6322fd575842d31490db74a60f717bc75fb0efa6d287da20c0c",
    "kaggle/dict_mir": "f04faf40c953f21f84795d2f067e431ac26296d02c9583c382c423e33b55deeb",
    "kaggle/dict_t3": "21d5ae1fb0682bc2b10551ace0cc32b50ba92200b9961a332b02d00d14ac8a72",
    "kaggle/dict_mir_t2": "2e9bb23059cc0710ac860077d9b21cc90d36db9668a43a9fb9f098faae35cecc",
    "kaggle/hash": "a7e4277d17df96802dfa6ca271233d2f743e7228ccd96d1f3abfd0303868d28a",
    "terabyte/dict": ["ec85ef303d8ea12ed769a9291cdc13ed7b53d479a60a778d3de930350be27d82",
                      "9535ea2a0f3fcca1b8f446150011f8170464be7c0277f29af864c578ea810d80",
                      "2497178ae94ad7394f7aee26d5afb1b4a2f1d43ed8c5a0ed95d10044973e152e",
                      "afe14c78c49dbff3f3f68c5c0fc198cdb4311fc2ebf922ef481a54ced0929eea"],
    "terabyte/dict_mir": ["b03720728ec6059bd3e35c0fc13dda1642ac0812c557596a5a568e46187c4f0c",
                          "3ee31a3bf1d3b51526a083a46d2bfd8389b329817098220df2dd3e04aff9bbfd",
                          "a065cc1b5f6e1734124f4f51fa2645541e7a731a1975ce3afa8397c8e842a941",
                          "fa969535cdc5f64ecdee6f9863f3121098b505ed5a37567056b20f352fa062bd"],
    "terabyte/dict_t3": ["bb3a5b21e500268a4c3f93ccfec0bb7d5ab6b2c42d4aeacb5fe02d267010d938",
                         "54415cc4603816568a2608e4e9d6db367b4adb2577aa110f95b8af39b650f93c",
                         "f16daf3fdd60969cdc85a1816ae117a065791dc45aa0a205013b421b182e9ff8",
                         "e1e01c61dc2a319d0c25f9289976f3cf882735816b4283c597a06bbea7be3354"],
    "terabyte/dict_mir_t2": [
        "942d6ecf20b835daeee199f564b8ac1acd53a3b2631f2deb21ee7dcc92f35f42",
        "4419e8808f9395758c5da669e2c414f0888d4dfe9c64012429c77685882f4765",
        "1232624ae02d27336230b43ab16ad3841e04bbf2be945b04faf19fb1085dce5a",
        "afb66bf2f9be53120812f5935703c66bfdf4189a18376e1a7793a0c64ba4f629"],
    "terabyte/hash": ["f21f121b0474bcccd1cfb3a4cc67a2d8c4f160e72f34b3fbc30485e8505d1a94",
                      "2f582577207bc9dbd0397d28afbdabeb5dbf6e5f09acb489e847145c62db60ad",
                      "7fbd7cfca28828a547144ec4dd7fd0a4ea4ebf56829b548d6b3eb97ff69fba11",
                      "e4408424e7dd18b67400e2d28edd2e19e680cb23810df8f8500d26f5882c6cf4"],
}


def digest(path):
    """sha256 of every attribute and dataset (name, dtype, chunks, bytes) of an HDF5 file."""
    h = hashlib.sha256()
    with h5py.File(path, "r") as f:
        for k in sorted(f.attrs):
            h.update(k.encode())
            h.update(repr(np.asarray(f.attrs[k]).tolist()).encode())
        names = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        for n in sorted(names):
            d = f[n]
            h.update(n.encode())
            h.update(str(d.dtype).encode())
            h.update(str(d.chunks).encode())
            h.update(np.ascontiguousarray(d[()]).tobytes())
    return h.hexdigest()


def write_sample(sample, folder):
    """train.txt (all 10,000 rows) and day_0..day_2 (4,000 / 3,000 / 3,000) in folder."""
    with gzip.open(sample, "rb") as f:
        lines = f.read().splitlines(keepends=True)
    with open(os.path.join(folder, "train.txt"), "wb") as f:
        f.write(b"".join(lines))
    for i, (a, b) in enumerate(DAY_BOUNDS):
        with open(os.path.join(folder, f"day_{i}"), "wb") as f:
            f.write(b"".join(lines[a:b]))
