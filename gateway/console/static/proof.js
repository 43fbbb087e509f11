// Checks an audit entry's inclusion proof in the browser, trusting nothing the page says except the pinned
// verifier key: leaf hash from the canonical entry bytes, RFC 9162 §2.1.3.2 fold to a root, comparison with
// the root in the signed checkpoint (C2SP tlog-checkpoint), and, where the browser supports Ed25519 in
// SubtleCrypto, the checkpoint's signature against the verifier key.
"use strict";
(function () {
  const section = document.getElementById("proof");
  const status = document.getElementById("proof-status");
  const signatureStatus = document.getElementById("signature-status");
  if (!section || !status) return;
  const data = section.dataset;

  const bytesFromBase64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  const bytesFromHex = (text) => new Uint8Array((text.match(/../g) || []).map((h) => parseInt(h, 16)));
  const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  const concat = (...parts) => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const part of parts) { out.set(part, at); at += part.length; }
    return out;
  };
  const sha256 = async (...parts) => new Uint8Array(await crypto.subtle.digest("SHA-256", concat(...parts)));
  const LEAF = new Uint8Array([0]);
  const NODE = new Uint8Array([1]);

  // RFC 9162 §2.1.3.2: verify an inclusion proof, returning the computed root.
  async function rootFromProof(index, size, leaf, proof) {
    if (index >= size) throw new Error("index beyond tree size");
    let fn = index, sn = size - 1, r = leaf;
    for (const p of proof) {
      if (sn === 0) throw new Error("proof too long");
      if ((fn & 1) === 1 || fn === sn) {
        r = await sha256(NODE, p, r);
        if ((fn & 1) === 0) {
          while ((fn & 1) === 0 && fn !== 0) { fn >>= 1; sn >>= 1; }
        }
      } else {
        r = await sha256(NODE, r, p);
      }
      fn >>= 1; sn >>= 1;
    }
    if (sn !== 0) throw new Error("proof too short");
    return r;
  }

  // C2SP signed note: text up to and including the line before the blank line, then signature lines.
  function parseNote(note) {
    const split = note.lastIndexOf("\n\n");
    if (split < 0 || !note.endsWith("\n")) throw new Error("malformed signed note");
    const text = note.slice(0, split + 1);
    const lines = text.slice(0, -1).split("\n");
    if (lines.length < 3 || !/^(0|[1-9][0-9]*)$/.test(lines[1])) throw new Error("malformed checkpoint");
    const signatures = note.slice(split + 2, -1).split("\n").map((line) => {
      const parts = line.replace(/^\u2014 /, "").split(" ");
      const blob = bytesFromBase64(parts[1]);
      return { name: parts[0], keyId: hex(blob.slice(0, 4)), signature: blob.slice(4) };
    });
    return { text, origin: lines[0], size: Number(lines[1]), root: bytesFromBase64(lines[2]), signatures };
  }

  async function checkSignature(note, vkey) {
    const [name, keyId, material] = [vkey.split("+")[0], vkey.split("+")[1], vkey.split("+").slice(2).join("+")];
    const raw = bytesFromBase64(material);
    const ours = note.signatures.filter((s) => s.name === name && s.keyId === keyId.toLowerCase());
    if (note.origin !== name || ours.length === 0 || raw[0] !== 1) return false;
    let key;
    try {
      key = await crypto.subtle.importKey("raw", raw.slice(1), { name: "Ed25519" }, false, ["verify"]);
    } catch (error) {
      return null; // this browser has no Ed25519 in SubtleCrypto
    }
    for (const s of ours) {
      if (!(await crypto.subtle.verify({ name: "Ed25519" }, key, s.signature, new TextEncoder().encode(note.text)))) {
        return false;
      }
    }
    return true;
  }

  function show(ok, detail) {
    status.dataset.result = ok ? "verified" : "failed";
    status.textContent = (ok ? data.msgOk : data.msgBad) + (detail ? " (" + detail + ")" : "");
  }

  async function run() {
    if (!window.crypto || !crypto.subtle) { show(false, "SubtleCrypto needs HTTPS"); return; }
    const canonical = bytesFromBase64(data.canonical);
    const leaf = await sha256(LEAF, canonical);
    if (hex(leaf) !== data.leaf) { show(false, "leaf hash"); return; }
    const proof = data.proof ? data.proof.split(" ").map(bytesFromHex) : [];
    const note = parseNote(new TextDecoder().decode(bytesFromBase64(data.note)));
    const size = Number(data.treeSize);
    if (note.size !== size) { show(false, "tree size"); return; }
    const root = await rootFromProof(Number(data.index), size, leaf, proof);
    if (hex(root) !== hex(note.root)) { show(false, "root hash"); return; }
    const signature = await checkSignature(note, data.vkey);
    if (signature === false) {
      signatureStatus.textContent = data.msgSigBad;
      show(false, "signature");
      return;
    }
    signatureStatus.textContent = signature ? data.msgSigOk : data.msgSigUnsupported;
    show(true, "");
  }

  run().catch((error) => show(false, error.message));
})();
