// A procedural head (no face model ships on npm): one BufferGeometry whose morph targets are the 52 ARKit
// blendshapes, in the order of the names it is built with (graphs/visemes.ARKIT_NAMES, served as arkit.json).
//
// Face coordinates: the head's centre at the origin, y up, the face looking down +z, so the avatar's left is +x.
// The skin is a latitude/longitude grid over an ellipsoid with features pushed in and out; the mouth is a slit cut
// between two grid rows (the lips), with a dark cavity, teeth and a tongue behind it, so opening the jaw shows a
// real opening. Eyes are spheres with an iris; eyelids are spherical caps that rotate over them.
// Every morph is a displacement field of the base vertices: a rotation (jaw, lids, eyeballs) or a masked shift.
import * as THREE from 'three';

const RX = 0.78, RY = 1.0, RZ = 0.88; // ellipsoid radii of the skull
const NLAT = 120, NLON = 120; // skin grid rows (top to bottom) and columns (around, the seam at the back)
const MOUTH_Y = -0.45; // the lip line
const MOUTH_HALF = 0.21; // half the width of the slit between the lips
const EYE = { x: 0.29, y: 0.12, r: 0.12 }; // eye centres at (+-x, y), eyeball radius
const LID_R = EYE.r * 1.22; // eyelid caps sit outside the eyeball even half-way through a blink (linear morph)
const UPPER_LID_EDGE = 1.12, LOWER_LID_EDGE = 2.08; // lid edges, radians from the top of the eye
const JAW_PIVOT = new THREE.Vector3(0, -0.1, -0.12);
const JAW_OPEN_RAD = 0.34;

const SRGB = (r, g, b) => new THREE.Color().setRGB(r, g, b, THREE.SRGBColorSpace);
const COLORS = {
  skin: SRGB(0.87, 0.66, 0.54),
  lip: SRGB(0.74, 0.37, 0.37),
  hair: SRGB(0.2, 0.13, 0.08),
  brow: SRGB(0.22, 0.14, 0.09),
  white: SRGB(0.95, 0.95, 0.93),
  iris: SRGB(0.24, 0.45, 0.62),
  pupil: SRGB(0.03, 0.03, 0.03),
  cavity: SRGB(0.22, 0.04, 0.05),
  teeth: SRGB(0.97, 0.96, 0.9),
  tongue: SRGB(0.78, 0.33, 0.38),
};

const smoothstep = (e0, e1, x) => {
  const t = Math.min(1, Math.max(0, (x - e0) / (e1 - e0)));
  return t * t * (3 - 2 * t);
};
const gauss = (d, s) => Math.exp(-(d * d) / (s * s));
const gauss2 = (x, y, cx, cy, sx, sy) => gauss(x - cx, sx) * gauss(y - cy, sy);

// ---- parts: each vertex carries its part and a few tags the morphs read ----
class Builder {
  constructor() {
    this.positions = [];
    this.colors = [];
    this.indices = [];
    this.tags = []; // per vertex: { part, side, lip }
  }
  vertex(p, color, tag) {
    this.positions.push(p.x, p.y, p.z);
    this.colors.push(color.r, color.g, color.b);
    this.tags.push(tag);
    return this.tags.length - 1;
  }
  tri(a, b, c) {
    this.indices.push(a, b, c);
  }
  // A UV sphere (or a part of one) around `center`: `point(theta, phi)` gives the unit direction, `keep(theta, phi)`
  // drops cells, `color(dir)` paints.
  sphere({ center, radii, rows, cols, thetaFrom = 0, thetaTo = Math.PI, phiFrom = -Math.PI, phiTo = Math.PI, color, tag }) {
    const base = this.tags.length;
    for (let i = 0; i <= rows; i++) {
      const theta = thetaFrom + ((thetaTo - thetaFrom) * i) / rows;
      for (let j = 0; j <= cols; j++) {
        const phi = phiFrom + ((phiTo - phiFrom) * j) / cols;
        const dir = new THREE.Vector3(Math.sin(theta) * Math.sin(phi), Math.cos(theta), Math.sin(theta) * Math.cos(phi));
        const p = new THREE.Vector3(center.x + radii.x * dir.x, center.y + radii.y * dir.y, center.z + radii.z * dir.z);
        this.vertex(p, color(dir), { ...tag });
      }
    }
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < cols; j++) {
        const a = base + i * (cols + 1) + j, b = a + cols + 1;
        this.tri(a, b, a + 1);
        this.tri(a + 1, b, b + 1);
      }
    }
  }
}

// The skin: an ellipsoid grid with a nose, sockets, cheekbones, lips and chin; the mouth slit cut out.
function buildSkin(builder) {
  const mouthRow = findMouthRow();
  const base = builder.tags.length;
  for (let i = 0; i <= NLAT; i++) {
    const theta = (Math.PI * i) / NLAT;
    for (let j = 0; j <= NLON; j++) {
      const phi = -Math.PI + (2 * Math.PI * j) / NLON;
      let x = RX * Math.sin(theta) * Math.sin(phi);
      let y = RY * Math.cos(theta);
      let z = RZ * Math.sin(theta) * Math.cos(phi);
      x *= 1 - 0.22 * smoothstep(-0.15, -0.95, y); // a narrower jaw and chin
      z *= 1 - 0.1 * smoothstep(0.4, 1.0, y);
      const front = smoothstep(0.25, 0.75, z / RZ);
      const ax = Math.abs(x);
      // features, pushed along the (approximate) outward normal
      const tipT = smoothstep(0.12, -0.24, y);
      const nose = (0.05 + 0.17 * tipT * tipT) * gauss(x, 0.055 + 0.045 * tipT) * smoothstep(0.2, 0.08, y) * smoothstep(-0.36, -0.24, y);
      const nostrils = 0.05 * gauss2(ax, y, 0.07, -0.25, 0.045, 0.045);
      const sockets = -0.085 * gauss2(ax, y, EYE.x, EYE.y, 0.13, 0.1);
      const browRidge = 0.035 * gauss2(ax, y, 0.3, 0.27, 0.18, 0.05);
      const cheekbones = 0.045 * gauss2(ax, y, 0.42, -0.08, 0.12, 0.1);
      const lipLens = Math.max(0, 1 - (x / (MOUTH_HALF + 0.04)) ** 2);
      const lips = 0.05 * lipLens * gauss(y - MOUTH_Y, 0.07);
      const chin = 0.05 * gauss2(x, y, 0, -0.82, 0.16, 0.1);
      const push = front * (nose + nostrils + sockets + browRidge + cheekbones + lips + chin);
      const n = new THREE.Vector3(x / (RX * RX), y / (RY * RY), z / (RZ * RZ)).normalize();
      x += n.x * push;
      y += n.y * push;
      z += n.z * push;
      // The two lip rows meet at the lip line, leaving a hairline gap that the jaw opens.
      const pinch = smoothstep(MOUTH_HALF + 0.12, MOUTH_HALF, ax) * front;
      const side = i <= mouthRow ? 1 : -1; // 1 above the lip line (skull), -1 below (jaw)
      if (i === mouthRow || i === mouthRow + 1) y += (MOUTH_Y + side * 0.0015 - y) * pinch;
      const p = new THREE.Vector3(x, y, z);
      // paint: lips (a lens around the slit), brows, hair (the cap, lower at the back)
      let color = COLORS.skin;
      const lipHeight = (side > 0 ? 0.06 : 0.07) * Math.max(0, 1 - (x / (MOUTH_HALF + 0.01)) ** 2);
      const lip = front > 0.5 && Math.abs(y - MOUTH_Y) < lipHeight;
      const browCurve = 0.3 + 0.035 * Math.cos(((ax - 0.3) / 0.2) * 1.2);
      const brow = front > 0.5 && ax > 0.1 && ax < 0.47 && Math.abs(y - browCurve) < 0.028 * (1.2 - ax);
      const hairline = THREE.MathUtils.lerp(-0.35, 0.6, smoothstep(-0.55, 0.55, z / RZ));
      if (lip) color = COLORS.lip;
      else if (brow) color = COLORS.brow;
      else if (y > hairline + 0.04 * Math.cos(x * 6)) color = COLORS.hair;
      builder.vertex(p, color, { part: 'skin', side, lip, front });
    }
  }
  for (let i = 0; i < NLAT; i++) {
    for (let j = 0; j < NLON; j++) {
      const a = base + i * (NLON + 1) + j, b = a + NLON + 1;
      if (i === mouthRow && inMouthSlit(builder, a, a + 1)) continue; // the opening between the lips
      builder.tri(a, b, a + 1);
      builder.tri(a + 1, b, b + 1);
    }
  }
  return { base, mouthRow };
}

function findMouthRow() {
  let best = 0;
  for (let i = 0; i < NLAT; i++) {
    const mid = (RY * (Math.cos((Math.PI * i) / NLAT) + Math.cos((Math.PI * (i + 1)) / NLAT))) / 2;
    const bestMid = (RY * (Math.cos((Math.PI * best) / NLAT) + Math.cos((Math.PI * (best + 1)) / NLAT))) / 2;
    if (Math.abs(mid - MOUTH_Y) < Math.abs(bestMid - MOUTH_Y)) best = i;
  }
  return best;
}

function inMouthSlit(builder, a, b) {
  const xa = builder.positions[3 * a], za = builder.positions[3 * a + 2];
  const xb = builder.positions[3 * b], zb = builder.positions[3 * b + 2];
  return za > 0 && zb > 0 && Math.abs((xa + xb) / 2) < MOUTH_HALF;
}

function eyeCenter(sign) {
  // behind the socket's surface so the front of the eyeball shows between the lids
  return new THREE.Vector3(sign * EYE.x, EYE.y, 0.64);
}

function buildEyes(builder) {
  for (const sign of [1, -1]) {
    const center = eyeCenter(sign);
    const side = sign > 0 ? 'Left' : 'Right';
    const forward = new THREE.Vector3(sign * 0.06, 0, 1).normalize(); // eyes look slightly outward at rest
    builder.sphere({
      center, radii: new THREE.Vector3(EYE.r, EYE.r, EYE.r), rows: 24, cols: 32,
      color: (dir) => {
        const angle = dir.angleTo(forward);
        return angle < 0.2 ? COLORS.pupil : angle < 0.45 ? COLORS.iris : COLORS.white;
      },
      tag: { part: 'eye', eye: side },
    });
    const lidRadii = new THREE.Vector3(LID_R, LID_R, LID_R);
    builder.sphere({
      center, radii: lidRadii, rows: 14, cols: 24, thetaFrom: 0, thetaTo: UPPER_LID_EDGE, phiFrom: -1.9, phiTo: 1.9,
      color: () => COLORS.skin, tag: { part: 'upperLid', eye: side },
    });
    builder.sphere({
      center, radii: lidRadii, rows: 10, cols: 24, thetaFrom: LOWER_LID_EDGE, thetaTo: Math.PI, phiFrom: -1.9, phiTo: 1.9,
      color: () => COLORS.skin, tag: { part: 'lowerLid', eye: side },
    });
  }
}

function buildMouthInside(builder) {
  // the cavity: upper half fixed to the skull, lower half moves with the jaw (tagged by side)
  const cavityCenter = new THREE.Vector3(0, MOUTH_Y - 0.04, 0.5);
  const before = builder.tags.length;
  builder.sphere({
    center: cavityCenter, radii: new THREE.Vector3(0.21, 0.17, 0.2), rows: 16, cols: 24,
    color: () => COLORS.cavity, tag: { part: 'cavity' },
  });
  for (let v = before; v < builder.tags.length; v++) builder.tags[v].side = builder.positions[3 * v + 1] >= MOUTH_Y ? 1 : -1;
  // teeth: a band of a cylinder behind each lip; the lower one rides on the jaw
  for (const [top, bottom, side] of [[MOUTH_Y + 0.015, MOUTH_Y - 0.05, 1], [MOUTH_Y - 0.03, MOUTH_Y - 0.09, -1]]) {
    const base = builder.tags.length;
    const cols = 20, radius = 0.2, cz = 0.5;
    for (let r = 0; r <= 1; r++) {
      for (let j = 0; j <= cols; j++) {
        const a = -1.0 + (2.0 * j) / cols;
        const p = new THREE.Vector3(radius * Math.sin(a), r === 0 ? top : bottom, cz + radius * Math.cos(a) * 0.95);
        builder.vertex(p, COLORS.teeth, { part: 'teeth', side });
      }
    }
    for (let j = 0; j < cols; j++) {
      const a = base + j, b = a + cols + 1;
      builder.tri(a, b, a + 1);
      builder.tri(a + 1, b, b + 1);
    }
  }
  builder.sphere({
    center: new THREE.Vector3(0, MOUTH_Y - 0.1, 0.5), radii: new THREE.Vector3(0.13, 0.05, 0.17), rows: 10, cols: 16,
    color: () => COLORS.tongue, tag: { part: 'tongue', side: -1 },
  });
}

function buildEars(builder) {
  for (const sign of [1, -1]) {
    builder.sphere({
      center: new THREE.Vector3(sign * 0.74, 0.02, -0.05), radii: new THREE.Vector3(0.07, 0.19, 0.12), rows: 10, cols: 14,
      color: () => COLORS.skin, tag: { part: 'ear' },
    });
  }
}

// ---- the morphs ----
function rotateAbout(p, pivot, axis, angle) {
  return p.clone().sub(pivot).applyAxisAngle(axis, angle).add(pivot).sub(p);
}
const X_AXIS = new THREE.Vector3(1, 0, 0), Y_AXIS = new THREE.Vector3(0, 1, 0);

// How much a vertex follows the jaw: the lower lip and chin fully, the lip corners and cheeks partly, the skull not.
function jawWeight(p, tag) {
  if (tag.part === 'teeth' || tag.part === 'tongue' || tag.part === 'cavity') return tag.side < 0 ? 1 : 0;
  if (tag.part !== 'skin') return 0;
  const ax = Math.abs(p.x);
  const lens = Math.max(0, 1 - (ax / MOUTH_HALF) ** 2);
  const atLipLine = ax < MOUTH_HALF ? 0.3 + 0.7 * Math.sqrt(lens) : 0.3 * smoothstep(MOUTH_HALF + 0.3, MOUTH_HALF, ax);
  const back = smoothstep(-0.55, 0.05, p.z / RZ); // the nape and the back of the skull stay
  if (tag.side < 0) {
    const below = Math.max(0, MOUTH_Y - p.y);
    const spread = 0.05 + 0.25 * smoothstep(0, MOUTH_HALF + 0.2, ax);
    return back * (1 - (1 - atLipLine) * gauss(below, spread));
  }
  if (ax < MOUTH_HALF && p.z > 0) return 0; // the upper lip
  return back * atLipLine * gauss(Math.max(0, p.y - MOUTH_Y), 0.08);
}

function lipMasks(p, tag) {
  if (tag.part !== 'skin') return { upper: 0, lower: 0, area: 0 };
  const ax = Math.abs(p.x);
  const lateral = gauss(Math.max(0, ax - MOUTH_HALF * 0.85), 0.07);
  const dy = p.y - MOUTH_Y;
  const front = tag.front;
  return {
    upper: tag.side > 0 ? front * lateral * gauss(dy, 0.075) : 0,
    lower: tag.side < 0 ? front * lateral * gauss(dy, 0.085) : 0,
    area: front * gauss2(p.x, p.y, 0, MOUTH_Y - 0.02, 0.33, 0.16),
  };
}

const cornerMask = (p, tag, sign) =>
  tag.part === 'skin' ? tag.front * gauss2(p.x, p.y, sign * MOUTH_HALF, MOUTH_Y, 0.1, 0.08) : 0;
const halfMask = (p, sign) => smoothstep(-0.04, 0.08, sign * p.x);
const skinMask = (p, tag, cx, cy, sx, sy) => (tag.part === 'skin' ? tag.front * gauss2(p.x, p.y, cx, cy, sx, sy) : 0);

function eyeMorph(kind, sign) {
  const side = sign > 0 ? 'Left' : 'Right';
  const center = eyeCenter(sign);
  return (p, tag) => {
    if (tag.eye !== side) {
      if (kind === 'squint') return new THREE.Vector3(0, 0.025, 0.008).multiplyScalar(skinMask(p, tag, sign * 0.3, -0.06, 0.12, 0.06));
      return null;
    }
    const lid = (angle) => rotateAbout(p, center, X_AXIS, angle);
    switch (kind) {
      case 'blink': return tag.part === 'upperLid' ? lid(LOWER_LID_EDGE - UPPER_LID_EDGE) : tag.part === 'lowerLid' ? lid(-0.06) : null;
      case 'squint': return tag.part === 'lowerLid' ? lid(-0.32) : tag.part === 'upperLid' ? lid(0.14) : null;
      case 'wide': return tag.part === 'upperLid' ? lid(-0.35) : tag.part === 'lowerLid' ? lid(0.1) : null;
      case 'lookUp': return tag.part === 'eye' ? lid(-0.35) : tag.part === 'upperLid' ? lid(-0.12) : null;
      case 'lookDown': return tag.part === 'eye' ? lid(0.35) : tag.part === 'upperLid' ? lid(0.3) : null;
      // in: towards the nose (-x for the left eye at +x); out: away from it
      case 'lookIn': return tag.part === 'eye' ? rotateAbout(p, center, Y_AXIS, -sign * 0.4) : null;
      case 'lookOut': return tag.part === 'eye' ? rotateAbout(p, center, Y_AXIS, sign * 0.4) : null;
      default: throw new Error(`unknown eye morph ${kind}`);
    }
  };
}

const V = (x, y, z) => new THREE.Vector3(x, y, z);

// Each ARKit blendshape as a displacement of a vertex (position p, tags) at weight 1; null where it does not move.
function morphDefinitions() {
  const sided = (make) => ({ Left: make(1), Right: make(-1) });
  const defs = {};
  for (const [stem, kind] of [['eyeBlink', 'blink'], ['eyeLookDown', 'lookDown'], ['eyeLookIn', 'lookIn'], ['eyeLookOut', 'lookOut'], ['eyeLookUp', 'lookUp'], ['eyeSquint', 'squint'], ['eyeWide', 'wide']]) {
    const both = sided((sign) => eyeMorph(kind, sign));
    defs[`${stem}Left`] = both.Left;
    defs[`${stem}Right`] = both.Right;
  }
  defs.jawOpen = (p, tag) => {
    const w = jawWeight(p, tag);
    return w ? rotateAbout(p, JAW_PIVOT, X_AXIS, JAW_OPEN_RAD).multiplyScalar(w) : null;
  };
  defs.jawForward = (p, tag) => V(0, 0, 0.07).multiplyScalar(jawWeight(p, tag));
  defs.jawLeft = (p, tag) => V(0.07, 0, 0).multiplyScalar(jawWeight(p, tag));
  defs.jawRight = (p, tag) => V(-0.07, 0, 0).multiplyScalar(jawWeight(p, tag));
  defs.mouthClose = (p, tag) => {
    const m = lipMasks(p, tag);
    return V(0, 0.1 * m.lower - 0.035 * m.upper, 0.01 * (m.lower + m.upper));
  };
  defs.mouthFunnel = (p, tag) => {
    const m = lipMasks(p, tag), lips = m.upper + m.lower;
    return V(-0.3 * p.x * lips, 0.03 * m.upper - 0.04 * m.lower, 0.06 * lips);
  };
  defs.mouthPucker = (p, tag) => {
    const m = lipMasks(p, tag), lips = m.upper + m.lower;
    return V(-0.45 * p.x * lips, -0.006 * m.upper + 0.006 * m.lower, 0.1 * lips);
  };
  defs.mouthLeft = (p, tag) => V(0.07, 0, -0.01 * Math.sign(p.x)).multiplyScalar(lipMasks(p, tag).area);
  defs.mouthRight = (p, tag) => V(-0.07, 0, 0.01 * Math.sign(p.x)).multiplyScalar(lipMasks(p, tag).area);
  for (const [side, sign] of [['Left', 1], ['Right', -1]]) {
    const corner = (p, tag) => cornerMask(p, tag, sign);
    const half = (p, tag) => ({ ...lipMasks(p, tag), h: halfMask(p, sign) });
    defs[`mouthSmile${side}`] = (p, tag) =>
      V(sign * 0.04, 0.07, -0.025).multiplyScalar(corner(p, tag)).add(V(0, 0.025, 0.012).multiplyScalar(skinMask(p, tag, sign * 0.36, -0.22, 0.12, 0.1)));
    defs[`mouthFrown${side}`] = (p, tag) => V(0, -0.06, -0.01).multiplyScalar(corner(p, tag));
    defs[`mouthDimple${side}`] = (p, tag) => V(sign * 0.03, 0, -0.04).multiplyScalar(corner(p, tag));
    defs[`mouthStretch${side}`] = (p, tag) => V(sign * 0.06, -0.02, -0.02).multiplyScalar(corner(p, tag));
    defs[`mouthPress${side}`] = (p, tag) => {
      const m = half(p, tag);
      return V(0, -0.012 * m.upper + 0.014 * m.lower, -0.015 * (m.upper + m.lower)).multiplyScalar(m.h);
    };
    defs[`mouthLowerDown${side}`] = (p, tag) => { const m = half(p, tag); return V(0, -0.06, 0.006).multiplyScalar(m.lower * m.h); };
    defs[`mouthUpperUp${side}`] = (p, tag) => { const m = half(p, tag); return V(0, 0.05, 0.01).multiplyScalar(m.upper * m.h); };
    defs[`browDown${side}`] = (p, tag) => V(-sign * 0.015, -0.05, 0.01).multiplyScalar(skinMask(p, tag, sign * 0.3, 0.3, 0.17, 0.07));
    defs[`browOuterUp${side}`] = (p, tag) => V(0, 0.06, 0).multiplyScalar(skinMask(p, tag, sign * 0.42, 0.3, 0.1, 0.08));
    defs[`cheekSquint${side}`] = (p, tag) => V(0, 0.035, 0.01).multiplyScalar(skinMask(p, tag, sign * 0.38, -0.1, 0.12, 0.08));
    defs[`noseSneer${side}`] = (p, tag) =>
      V(0, 0.035, 0.008).multiplyScalar(skinMask(p, tag, sign * 0.08, -0.2, 0.06, 0.07)).add(V(0, -0.012, 0).multiplyScalar(skinMask(p, tag, sign * 0.09, 0.22, 0.06, 0.06)));
  }
  defs.mouthRollLower = (p, tag) => V(0, 0.015, -0.05).multiplyScalar(lipMasks(p, tag).lower);
  defs.mouthRollUpper = (p, tag) => V(0, -0.015, -0.05).multiplyScalar(lipMasks(p, tag).upper);
  defs.mouthShrugLower = (p, tag) => V(0, 0.04, 0.02).multiplyScalar(lipMasks(p, tag).lower).add(V(0, 0.03, 0.02).multiplyScalar(skinMask(p, tag, 0, -0.75, 0.2, 0.12)));
  defs.mouthShrugUpper = (p, tag) => V(0, 0.035, 0.01).multiplyScalar(lipMasks(p, tag).upper);
  defs.browInnerUp = (p, tag) => V(0, 0.06, 0).multiplyScalar(skinMask(p, tag, 0.16, 0.3, 0.09, 0.08) + skinMask(p, tag, -0.16, 0.3, 0.09, 0.08));
  defs.cheekPuff = (p, tag) => V(Math.sign(p.x) * 0.07, -0.01, 0.05).multiplyScalar(skinMask(p, tag, 0.4, -0.38, 0.12, 0.13) + skinMask(p, tag, -0.4, -0.38, 0.12, 0.13));
  defs.tongueOut = (p, tag) => (tag.part === 'tongue' ? V(0, 0.02, 0.3) : null);
  return defs;
}

// The head's geometry with one morph target per name, in `names`' order (positions and normals, relative).
export function buildHeadGeometry(names) {
  const builder = new Builder();
  buildSkin(builder);
  buildEyes(builder);
  buildMouthInside(builder);
  buildEars(builder);
  const geometry = new THREE.BufferGeometry();
  const positions = new Float32Array(builder.positions);
  geometry.setAttribute('position', new THREE.BufferAttribute(positions, 3));
  geometry.setAttribute('color', new THREE.BufferAttribute(new Float32Array(builder.colors), 3));
  geometry.setIndex(builder.indices);
  geometry.computeVertexNormals();
  const baseNormals = geometry.getAttribute('normal').array.slice();

  const defs = morphDefinitions();
  const unknown = names.filter((name) => !defs[name]);
  if (unknown.length) throw new Error(`no morph for blendshape(s) ${unknown.join(', ')}`);
  const count = builder.tags.length;
  const p = new THREE.Vector3();
  const scratch = new THREE.BufferGeometry();
  scratch.setIndex(builder.indices);
  const morphPositions = [], morphNormals = [];
  for (const name of names) {
    const delta = new Float32Array(count * 3);
    const moved = new Float32Array(positions);
    for (let v = 0; v < count; v++) {
      p.fromArray(positions, 3 * v);
      const d = defs[name](p, builder.tags[v]);
      if (!d) continue;
      delta[3 * v] = d.x; delta[3 * v + 1] = d.y; delta[3 * v + 2] = d.z;
      moved[3 * v] += d.x; moved[3 * v + 1] += d.y; moved[3 * v + 2] += d.z;
    }
    scratch.setAttribute('position', new THREE.BufferAttribute(moved, 3));
    scratch.computeVertexNormals();
    const normals = scratch.getAttribute('normal').array;
    const normalDelta = new Float32Array(count * 3);
    for (let k = 0; k < normalDelta.length; k++) normalDelta[k] = normals[k] - baseNormals[k];
    scratch.deleteAttribute('normal');
    const target = new THREE.BufferAttribute(delta, 3);
    target.name = name;
    morphPositions.push(target);
    const normalTarget = new THREE.BufferAttribute(normalDelta, 3);
    normalTarget.name = name;
    morphNormals.push(normalTarget);
  }
  geometry.morphAttributes.position = morphPositions;
  geometry.morphAttributes.normal = morphNormals;
  geometry.morphTargetsRelative = true;
  scratch.dispose();
  return geometry;
}

// Landmarks in face coordinates, for framing and for tests that look at one region.
export const FACE_LANDMARKS = {
  mouth: new THREE.Vector3(0, MOUTH_Y - 0.05, 0.8),
  mouthHalfWidth: MOUTH_HALF,
  forehead: new THREE.Vector3(0, 0.42, 0.82),
  leftEye: eyeCenter(1),
  rightEye: eyeCenter(-1),
};

// The head mesh (morphs by name via morphTargetDictionary) in a group whose origin is the centre of the head.
export function buildHead(names) {
  const geometry = buildHeadGeometry(names);
  const material = new THREE.MeshStandardMaterial({ vertexColors: true, roughness: 0.62, metalness: 0.0 });
  const mesh = new THREE.Mesh(geometry, material);
  mesh.name = 'face';
  mesh.updateMorphTargets(); // fills morphTargetDictionary (name -> index) and morphTargetInfluences
  return mesh;
}
