// The stage around the head: the body, lights, the five scenes (a background gradient and a simple prop each),
// camera shots with timed transitions, and gestures as small body and head animations.
import * as THREE from 'three';

// World units: the head is 2 tall (about 23 cm), so the figure's head centre sits at y = 13.7.
export const HEAD_CENTER = new THREE.Vector3(0, 13.7, 0);
const NECK_PIVOT = new THREE.Vector3(0, 12.85, 0);

const SHOTS = {
  SHOT_CLOSE_UP: { position: new THREE.Vector3(0, 13.75, 5.8), target: new THREE.Vector3(0, 13.6, 0) },
  SHOT_MEDIUM: { position: new THREE.Vector3(0, 13.2, 11.5), target: new THREE.Vector3(0, 12.6, 0) },
  SHOT_WIDE: { position: new THREE.Vector3(0, 12.2, 32), target: new THREE.Vector3(0, 10.8, 0) },
};

const srgb = (hex) => new THREE.Color(hex);

function gradientTexture(top, bottom) {
  const canvas = document.createElement('canvas');
  canvas.width = 2;
  canvas.height = 256;
  const g = canvas.getContext('2d');
  const fill = g.createLinearGradient(0, 0, 0, 256);
  fill.addColorStop(0, top);
  fill.addColorStop(1, bottom);
  g.fillStyle = fill;
  g.fillRect(0, 0, 2, 256);
  const texture = new THREE.CanvasTexture(canvas);
  texture.colorSpace = THREE.SRGBColorSpace;
  return texture;
}

const box = (w, h, d, color, x, y, z, options = {}) => {
  const mesh = new THREE.Mesh(new THREE.BoxGeometry(w, h, d), new THREE.MeshStandardMaterial({ color, roughness: 0.8, ...options }));
  mesh.position.set(x, y, z);
  return mesh;
};

// One prop group per scene, placed behind and beside the figure so the wide shot shows it.
function moviePalace() {
  const group = new THREE.Group();
  group.add(box(34, 15, 0.3, 0xe8eef8, 0, 17, -22, { emissive: 0x8090a8, emissiveIntensity: 0.6 })); // the screen
  for (const x of [-19.5, 19.5]) group.add(box(5, 24, 0.8, 0x8a1020, x, 12, -21.5)); // curtains
  for (let row = 0; row < 3; row++) {
    for (let seat = -5; seat <= 5; seat++) {
      if (Math.abs(seat) < 2) continue;
      group.add(box(2, 2.2, 2, 0x6a0d18, seat * 2.6, 1.1 + row * 0.9, -6 - row * 4));
    }
  }
  return group;
}

function sportsArena() {
  const group = new THREE.Group();
  const field = box(80, 0.2, 60, 0x2f7d32, 0, -0.1, -20);
  group.add(field);
  for (let i = -3; i <= 3; i++) group.add(box(0.4, 0.05, 60, 0xffffff, i * 10, 0.05, -20)); // yard lines
  for (const x of [-8, 8]) group.add(box(0.5, 10, 0.5, 0xf0f0f0, x, 5, -26)); // goal posts
  group.add(box(16.5, 0.5, 0.5, 0xf0f0f0, 0, 10, -26));
  for (const x of [-26, 26]) {
    group.add(box(0.8, 30, 0.8, 0x606060, x, 15, -30));
    group.add(box(6, 3, 1, 0xffffee, x, 31, -30, { emissive: 0xffffcc, emissiveIntensity: 1.0 })); // floodlights
  }
  const ball = new THREE.Mesh(new THREE.SphereGeometry(1.1, 24, 16), new THREE.MeshStandardMaterial({ color: 0xf4f4f4 }));
  ball.position.set(5, 1.1, 4);
  group.add(ball);
  return group;
}

function musicStudio() {
  const group = new THREE.Group();
  for (let i = -4; i <= 4; i++) group.add(box(3.6, 12, 0.6, i % 2 ? 0x3b2a5a : 0x51307a, i * 4, 12, -14)); // acoustic panels
  for (const x of [-9, 9]) {
    group.add(box(3.5, 5.5, 3, 0x161616, x, 2.75, -3)); // speaker cabinets
    for (const [y, r] of [[4, 1.1], [1.8, 0.7]]) {
      const cone = new THREE.Mesh(new THREE.CylinderGeometry(r, r, 0.2, 24), new THREE.MeshStandardMaterial({ color: 0x444444 }));
      cone.rotation.x = Math.PI / 2;
      cone.position.set(x, y, -1.45);
      group.add(cone);
    }
  }
  const stand = box(0.2, 11, 0.2, 0x888888, -3.5, 5.5, 4);
  const mic = new THREE.Mesh(new THREE.SphereGeometry(0.5, 16, 12), new THREE.MeshStandardMaterial({ color: 0x999999, metalness: 0.6 }));
  mic.position.set(-3.5, 11.3, 4);
  group.add(stand, mic);
  return group;
}

function library() {
  const group = new THREE.Group();
  const bookColors = [0x7a2e1f, 0x1f4e7a, 0x2e6b3a, 0x8a6a1f, 0x5a2e6b, 0x333333];
  for (const x of [-14, 0, 14]) {
    group.add(box(12, 22, 3, 0x5b3a1e, x, 11, -12)); // shelf
    for (let shelf = 0; shelf < 5; shelf++) {
      let bx = x - 5.5;
      let k = 0;
      while (bx < x + 5.2) {
        const w = 0.5 + ((k * 7 + shelf * 3) % 5) * 0.12;
        const h = 2.6 + ((k * 5 + shelf) % 4) * 0.3;
        group.add(box(w, h, 2, bookColors[(k + shelf + Math.abs(Math.round(x))) % bookColors.length], bx + w / 2, 1.2 + shelf * 4.2 + h / 2, -10.6));
        bx += w + 0.05;
        k++;
      }
    }
  }
  return group;
}

function outdoorNature() {
  const group = new THREE.Group();
  group.add(box(120, 0.2, 80, 0x4c8c3a, 0, -0.1, -25));
  for (const [x, z, s] of [[-12, -10, 1.2], [13, -14, 1.5], [-22, -24, 1.8], [24, -28, 1.4]]) {
    const trunk = new THREE.Mesh(new THREE.CylinderGeometry(0.5 * s, 0.7 * s, 7 * s, 12), new THREE.MeshStandardMaterial({ color: 0x6b4423 }));
    trunk.position.set(x, 3.5 * s, z);
    const crown = new THREE.Mesh(new THREE.SphereGeometry(4 * s, 18, 14), new THREE.MeshStandardMaterial({ color: 0x2f6b2a }));
    crown.position.set(x, 9 * s, z);
    group.add(trunk, crown);
  }
  const sun = new THREE.Mesh(new THREE.SphereGeometry(3, 24, 16), new THREE.MeshBasicMaterial({ color: 0xfff2a8 }));
  sun.position.set(-30, 38, -60);
  group.add(sun);
  return group;
}

// background gradient (top, bottom), hemisphere sky/ground tint, and the prop builder per Scene enum name
const SCENES = {
  SCENE_LIBRARY: { top: '#6b4a2b', bottom: '#2a1a0e', sky: 0xffe8c8, ground: 0x4a3020, props: library },
  SCENE_MOVIE_THEATER: { top: '#3a0a12', bottom: '#0a0204', sky: 0xffd0d8, ground: 0x300810, props: moviePalace },
  SCENE_SPORTS_ARENA: { top: '#0b1f4a', bottom: '#2d5a2e', sky: 0xe0ecff, ground: 0x2f7d32, props: sportsArena },
  SCENE_MUSIC_STUDIO: { top: '#2a0f4a', bottom: '#0c0618', sky: 0xe8d8ff, ground: 0x20103a, props: musicStudio },
  SCENE_OUTDOOR_NATURE: { top: '#6fb6ff', bottom: '#dff1ff', sky: 0xcfe8ff, ground: 0x4c8c3a, props: outdoorNature },
};
export const SCENE_NAMES = Object.keys(SCENES);

function buildBody() {
  const body = new THREE.Group();
  const shirt = new THREE.MeshStandardMaterial({ color: 0x2b4c7e, roughness: 0.85 });
  const skin = new THREE.MeshStandardMaterial({ color: srgb(0xdca88a), roughness: 0.7 });
  const torso = new THREE.Mesh(new THREE.CapsuleGeometry(1.5, 3.0, 8, 24), shirt);
  torso.scale.set(1.3, 1, 0.6);
  torso.position.set(0, 9.0, 0);
  const neck = new THREE.Mesh(new THREE.CylinderGeometry(0.5, 0.56, 1.4, 20), skin);
  neck.position.set(0, 12.5, -0.08);
  const shoulders = new THREE.Group(); // shrugs lift this
  const yoke = new THREE.Mesh(new THREE.CapsuleGeometry(0.72, 3.3, 6, 20), shirt); // square shoulders
  yoke.rotation.z = Math.PI / 2;
  yoke.scale.set(1, 1, 0.8);
  yoke.position.set(0, 11.65, 0);
  shoulders.add(yoke);
  const arms = [];
  for (const sign of [1, -1]) {
    const arm = new THREE.Group();
    arm.position.set(sign * 2.35, 11.6, 0);
    const upper = new THREE.Mesh(new THREE.CapsuleGeometry(0.55, 3.6, 6, 16), shirt);
    upper.position.set(0, -2.2, 0);
    const hand = new THREE.Mesh(new THREE.SphereGeometry(0.55, 16, 12), skin);
    hand.position.set(0, -4.6, 0);
    arm.add(upper, hand);
    arm.userData.sign = sign;
    shoulders.add(arm);
    arms.push(arm);
  }
  body.add(torso, neck, shoulders);
  return { body, shoulders, arms };
}

export class Stage {
  constructor(canvas, { antialias = true } = {}) {
    this.renderer = new THREE.WebGLRenderer({ canvas, antialias });
    this.renderer.setPixelRatio(1);
    this.renderer.outputColorSpace = THREE.SRGBColorSpace;
    this.scene = new THREE.Scene();
    this.camera = new THREE.PerspectiveCamera(34, 16 / 9, 0.1, 400);
    this.hemisphere = new THREE.HemisphereLight(0xffffff, 0x444444, 1.1);
    const key = new THREE.DirectionalLight(0xfff4e8, 2.2);
    key.position.set(-6, 20, 14);
    const rim = new THREE.DirectionalLight(0xc8d8ff, 0.8);
    rim.position.set(8, 16, -10);
    this.scene.add(this.hemisphere, key, rim);
    const { body, shoulders, arms } = buildBody();
    this.body = body;
    this.shoulders = shoulders;
    this.arms = arms;
    this.scene.add(body);
    this.neck = new THREE.Group(); // the head turns about the neck
    this.neck.position.copy(NECK_PIVOT);
    this.scene.add(this.neck);
    this.headHolder = new THREE.Group();
    this.headHolder.position.copy(HEAD_CENTER).sub(NECK_PIVOT);
    this.neck.add(this.headHolder);
    this.props = {};
    this.backgrounds = {};
    this.sceneName = null;
    this.shot = null;
    this.cameraMove = null;
    this.gesture = null;
    this.setScene('SCENE_LIBRARY');
    this.setShot('SHOT_MEDIUM', 0);
  }

  addHead(mesh) {
    this.headHolder.add(mesh);
  }

  setScene(name) {
    const spec = SCENES[name];
    if (!spec) throw new Error(`unknown scene ${name}: one of ${SCENE_NAMES.join(', ')}`);
    if (!this.props[name]) {
      this.props[name] = spec.props();
      this.backgrounds[name] = gradientTexture(spec.top, spec.bottom);
      this.scene.add(this.props[name]);
    }
    for (const [other, group] of Object.entries(this.props)) group.visible = other === name;
    this.scene.background = this.backgrounds[name];
    this.hemisphere.color.set(spec.sky);
    this.hemisphere.groundColor.set(spec.ground);
    this.sceneName = name;
  }

  // Moves the camera to a shot over `transitionS` seconds (0 cuts), starting at `now` (seconds, performance clock).
  setShot(shot, transitionS, now = performance.now() / 1000) {
    const to = SHOTS[shot];
    if (!to) throw new Error(`unknown shot ${shot}: one of ${Object.keys(SHOTS).join(', ')}`);
    const from = { position: this.camera.position.clone(), target: this.cameraTarget ? this.cameraTarget.clone() : to.target.clone() };
    this.shot = shot;
    if (!(transitionS > 0) || !this.cameraTarget) {
      this.cameraMove = null;
      this.camera.position.copy(to.position);
      this.cameraTarget = to.target.clone();
      this.camera.lookAt(this.cameraTarget);
      return;
    }
    this.cameraMove = { from, to, start: now, duration: transitionS };
  }

  // A gesture by name, played from `now` for `durationS` seconds.
  playGesture(name, intensity, durationS, now = performance.now() / 1000) {
    this.gesture = { name, intensity: intensity || 0.7, start: now, duration: Math.max(0.4, durationS || 1.2) };
  }

  // Head rotation in degrees as FaceFrame has it (positive pitch looks down, yaw turns and roll tilts to the
  // avatar's left, which is +x here), plus whatever the gesture adds.
  update(now, head) {
    if (this.cameraMove) {
      const m = this.cameraMove;
      const t = Math.min(1, (now - m.start) / m.duration);
      const e = t * t * (3 - 2 * t);
      this.camera.position.lerpVectors(m.from.position, m.to.position, e);
      this.cameraTarget.lerpVectors(m.from.target, m.to.target, e);
      if (t >= 1) this.cameraMove = null;
    }
    this.camera.lookAt(this.cameraTarget);
    let pitch = head.pitch, yaw = head.yaw, roll = head.roll;
    let shrug = 0;
    const armAngles = [0, 0];
    const g = this.gesture;
    if (g) {
      const t = (now - g.start) / g.duration;
      if (t >= 1) this.gesture = null;
      else if (t >= 0) {
        const envelope = Math.sin(Math.PI * t) * g.intensity;
        const wave = Math.sin(2 * Math.PI * 2 * t);
        switch (g.name) {
          case 'nod': pitch += 9 * envelope * wave; break;
          case 'shake': case 'head_shake': yaw += 12 * envelope * wave; break;
          case 'shrug': shrug = 0.45 * envelope; roll += 4 * envelope; break;
          case 'point': armAngles[1] = 1.3 * envelope; break;
          case 'thumbs_up': armAngles[0] = 1.6 * envelope; break;
          case 'wave': armAngles[0] = (2.4 + 0.3 * wave) * envelope; break;
          case 'open_palm': armAngles[0] = 0.7 * envelope; armAngles[1] = 0.7 * envelope; break;
          default: pitch += 4 * envelope * wave; break;
        }
      }
    }
    const deg = Math.PI / 180;
    this.neck.rotation.set(pitch * deg, yaw * deg, -roll * deg, 'YXZ');
    this.shoulders.position.y = shrug;
    this.arms.forEach((arm, i) => {
      arm.rotation.x = -armAngles[i];
      arm.rotation.z = arm.userData.sign * 0.08 * (1 + armAngles[i]);
    });
  }

  // True while something moves by itself (a camera transition, a gesture): the page keeps rendering.
  animating() {
    return Boolean(this.cameraMove || this.gesture);
  }

  resize(width, height) {
    this.renderer.setSize(width, height, false);
    this.camera.aspect = width / height;
    this.camera.updateProjectionMatrix();
  }

  render() {
    this.renderer.render(this.scene, this.camera);
  }
}
