#!/usr/bin/env python3
"""Writes a SentencePiece tokenizer.model as llama2.c's tokenizer.bin (what run.c reads),
for bench/peer_llama2c.sh on models whose tokenizer ships as a .model file.

The format is llama2.c's tokenizer.py export: max piece length (uint32), then per id its
score (float32), byte length (uint32) and bytes, with U+2581 as a space and BOS/EOS
written as "\\n<s>\\n" / "\\n</s>\\n". The .model protobuf is parsed by hand (field 1 of
ModelProto: pieces; of SentencePiece: 1 piece, 2 score), so nothing beyond the
Python standard library is needed.

    sp_to_llama2c_tok.py tokenizer.model tokenizer.bin
"""
import struct
import sys


def varint(b, i):
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            return v, i


def fields(b):
    """(field number, wire type, value) of one protobuf message."""
    i = 0
    while i < len(b):
        key, i = varint(b, i)
        f, w = key >> 3, key & 7
        if w == 0:
            v, i = varint(b, i)
        elif w == 1:
            v, i = b[i:i + 8], i + 8
        elif w == 2:
            n, i = varint(b, i)
            v, i = b[i:i + n], i + n
        elif w == 5:
            v, i = b[i:i + 4], i + 4
        else:
            raise SystemExit(f"{sys.argv[1]}: unsupported protobuf wire type {w}")
        yield f, w, v


def main():
    src, dst = sys.argv[1], sys.argv[2]
    pieces = []
    for f, w, v in fields(open(src, "rb").read()):
        if f == 1 and w == 2:
            piece, score = "", 0.0
            for g, _, u in fields(v):
                if g == 1:
                    piece = u.decode("utf-8")
                elif g == 2:
                    score = struct.unpack("<f", u)[0]
            pieces.append((piece, score))
    if not pieces:
        raise SystemExit(f"{src}: no pieces found (not a SentencePiece model?)")
    out = []
    for piece, score in pieces:
        if piece == "<s>":
            piece = "\n<s>\n"
        elif piece == "</s>":
            piece = "\n</s>\n"
        out.append((piece.replace("\u2581", " ").encode("utf-8"), score))
    with open(dst, "wb") as fo:
        fo.write(struct.pack("I", max(len(b) for b, _ in out)))
        for b, s in out:
            fo.write(struct.pack("fI", s, len(b)))
            fo.write(b)


if __name__ == "__main__":
    main()
