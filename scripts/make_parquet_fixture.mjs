// Writes tests/fixtures/parquet/fastvideo_t2v_fixture.parquet (+ .expected.json) with an INDEPENDENT parquet writer,
// so the C# reader (Parquet.Net) is checked against a file it did not write. The writer is parquet-wasm: the Apache
// Arrow Rust parquet writer compiled to WebAssembly, fed an Arrow table built with apache-arrow (JavaScript) - the
// same route pyarrow takes (Arrow table -> Arrow's parquet writer). The Arrow schema mirrors FastVideo's
// pyarrow_schema_t2v: string / binary / list<int64> / int64 / float64 columns, all nullable, snappy, data page v1.
// (hyparquet-writer was tried first: it only writes data page v2, whose repeated columns Parquet.Net 6.1 cannot read;
// pyarrow writes v1 pages by default, so v1 is what real FastVideo datasets contain.)
//
// Regenerate (needs Node >= 18 and npm; nothing is installed into the repository):
//   mkdir -p /tmp/pqfixture && cd /tmp/pqfixture && npm init -y && npm install parquet-wasm@0.8.0 apache-arrow@21.2.0
//   node /path/to/repo/scripts/make_parquet_fixture.mjs /path/to/repo/tests/fixtures/parquet
// (run it from the folder where those packages are installed: modules are resolved from the current directory)
import { createRequire } from 'node:module'
import { writeFileSync, renameSync } from 'node:fs'
import { join } from 'node:path'

const require = createRequire(join(process.cwd(), 'noop.js'))
const arrow = require('apache-arrow')
const pw = require('parquet-wasm/node')

const outDir = process.argv[2]
if (!outDir) { console.error('usage: node make_parquet_fixture.mjs OUT_DIR'); process.exit(2) }

// Values are multiples of 1/8 in [-1.375, 1.5]: exactly representable in float32, float16 and bfloat16, so the
// expected floats are the same whatever the stored dtype.
function values(count, salt) {
  const out = []
  for (let k = 0; k < count; k++) out.push((((k * 37 + salt * 11) % 23) - 11) / 8)
  return out
}

function float32Bytes(vals) {
  const b = new Uint8Array(vals.length * 4)
  const dv = new DataView(b.buffer)
  vals.forEach((v, i) => dv.setFloat32(i * 4, v, true))
  return b
}
function bfloat16Bytes(vals) {
  // bfloat16 = the upper 16 bits of the float32 (exact for these values, no rounding needed)
  const b = new Uint8Array(vals.length * 2)
  const dv = new DataView(b.buffer)
  const tmp = new DataView(new ArrayBuffer(4))
  vals.forEach((v, i) => { tmp.setFloat32(0, v, true); dv.setUint16(i * 2, tmp.getUint32(0, true) >>> 16, true) })
  return b
}
function float16Bits(v) {
  // IEEE half from a value that is exact in half precision (normal numbers and zero only, as used here)
  if (v === 0) return Object.is(v, -0) ? 0x8000 : 0
  const sign = v < 0 ? 0x8000 : 0
  let a = Math.abs(v)
  let e = Math.floor(Math.log2(a))
  let m = a / Math.pow(2, e) - 1
  const mant = Math.round(m * 1024)
  if (mant * 1 !== m * 1024) throw new Error('value not exact in float16: ' + v)
  return sign | ((e + 15) << 10) | mant
}
function float16Bytes(vals) {
  const b = new Uint8Array(vals.length * 2)
  const dv = new DataView(b.buffer)
  vals.forEach((v, i) => dv.setUint16(i * 2, float16Bits(v), true))
  return b
}
const encoders = { float32: float32Bytes, float16: float16Bytes, bfloat16: bfloat16Bytes }

const rows = [
  { id: 'clip_000', caption: 'a red square moving left', latentShape: [2, 2, 3, 4], latentDtype: 'float32', textShape: [3, 8], textDtype: 'float32', width: 32, height: 24, numFrames: 2, duration: 1.5, fps: 16.0 },
  { id: 'clip_001', caption: 'unicode caption: café ☕ — ok', latentShape: [2, 2, 3, 4], latentDtype: 'float16', textShape: [5, 8], textDtype: 'float16', width: 32, height: 24, numFrames: 2, duration: 2.25, fps: 24.0 },
  { id: 'clip_002', caption: 'a blue circle moving up', latentShape: [2, 2, 3, 4], latentDtype: 'bfloat16', textShape: [1, 8], textDtype: 'bfloat16', width: 32, height: 24, numFrames: 2, duration: 0.5, fps: 8.0 },
  { id: 'clip_003', caption: '', latentShape: [2, 2, 3, 4], latentDtype: 'float32', textShape: [2, 8], textDtype: 'bfloat16', width: 64, height: 48, numFrames: 2, duration: 3.0, fps: 30.0 },
]

const prod = s => s.reduce((a, b) => a * b, 1)
const expected = []
const cols = {
  id: [], vae_latent_bytes: [], vae_latent_shape: [], vae_latent_dtype: [],
  text_embedding_bytes: [], text_embedding_shape: [], text_embedding_dtype: [],
  file_name: [], caption: [], media_type: [], width: [], height: [], num_frames: [], duration_sec: [], fps: [],
}
rows.forEach((r, i) => {
  const lat = values(prod(r.latentShape), i)
  const txt = values(prod(r.textShape), i + 100)
  cols.id.push(r.id)
  cols.vae_latent_bytes.push(encoders[r.latentDtype](lat))
  cols.vae_latent_shape.push(r.latentShape.map(BigInt))
  cols.vae_latent_dtype.push(r.latentDtype)
  cols.text_embedding_bytes.push(encoders[r.textDtype](txt))
  cols.text_embedding_shape.push(r.textShape.map(BigInt))
  cols.text_embedding_dtype.push(r.textDtype)
  cols.file_name.push(r.id + '.mp4')
  cols.caption.push(r.caption)
  cols.media_type.push('video')
  cols.width.push(BigInt(r.width))
  cols.height.push(BigInt(r.height))
  cols.num_frames.push(BigInt(r.numFrames))
  cols.duration_sec.push(r.duration)
  cols.fps.push(r.fps)
  expected.push({ id: r.id, caption: r.caption, file_name: r.id + '.mp4', media_type: 'video', width: r.width, height: r.height,
    num_frames: r.numFrames, duration_sec: r.duration, fps: r.fps,
    vae_latent_shape: r.latentShape, vae_latent_dtype: r.latentDtype, vae_latent: lat,
    text_embedding_shape: r.textShape, text_embedding_dtype: r.textDtype, text_embedding: txt })
})

const listI64 = () => new arrow.List(new arrow.Field('element', new arrow.Int64(), true))
const types = {
  id: new arrow.Utf8(), vae_latent_bytes: new arrow.Binary(), vae_latent_shape: listI64(), vae_latent_dtype: new arrow.Utf8(),
  text_embedding_bytes: new arrow.Binary(), text_embedding_shape: listI64(), text_embedding_dtype: new arrow.Utf8(),
  file_name: new arrow.Utf8(), caption: new arrow.Utf8(), media_type: new arrow.Utf8(),
  width: new arrow.Int64(), height: new arrow.Int64(), num_frames: new arrow.Int64(),
  duration_sec: new arrow.Float64(), fps: new arrow.Float64(),
}
const vectors = {}
for (const [name, data] of Object.entries(cols)) vectors[name] = arrow.vectorFromArray(data, types[name])
const table = new arrow.Table(vectors)

// Two row groups of two rows, snappy (pyarrow's default codec), so the reader's row-group mapping is exercised.
const props = new pw.WriterPropertiesBuilder()
  .setCompression(pw.Compression.SNAPPY)
  .setWriterVersion(pw.WriterVersion.V1)
  .setMaxRowGroupSize(2)
  .setCreatedBy('parquet-wasm 0.8.0 via apache-arrow 21.2.0 (FastVideoSharp fixture)')
  .build()
const bytes = pw.writeParquet(pw.Table.fromIPCStream(arrow.tableToIPC(table, 'stream')), props)

function writeAtomic(path, data) { writeFileSync(path + '.tmp', data); renameSync(path + '.tmp', path) }
writeAtomic(join(outDir, 'fastvideo_t2v_fixture.parquet'), bytes)
writeAtomic(join(outDir, 'fastvideo_t2v_fixture.expected.json'),
  JSON.stringify({ writer: 'parquet-wasm 0.8.0 + apache-arrow 21.2.0', rows: expected }, null, 1) + '\n')
console.log('wrote', rows.length, 'rows to', outDir)
