// Name length limits: a name may be 255 bytes (bytes, not characters) for every call that makes or
// finds one; 256 bytes is ENAMETOOLONG; a path may be 4095 bytes. Any byte but '/' and NUL is fine.

import assert from 'node:assert/strict';
import { file, type PosixCase } from '../../support/posix';

export const cases: readonly PosixCase[] = [
  {
    name: 'a 255-byte name can be created, listed, stat-ed, renamed to and linked to',
    action: async ({ fs, p }) => {
      const a = 'a'.repeat(255);
      const b = 'b'.repeat(255);
      const c = 'c'.repeat(255);
      await fs.writeFile(p(a), 'long');
      const listed = (await fs.readdir(p('.'))).includes(a);
      await fs.rename(p(a), p(b));
      await fs.link(p(b), p(c));
      await fs.mkdir(p('d'.repeat(255)));
      await fs.symlink(b, p('e'.repeat(255)));
      return { listed, content: await fs.readFile(p(c), 'utf8'), viaLink: await fs.readFile(p('e'.repeat(255)), 'utf8'), count: (await fs.readdir(p('.'))).length };
    },
    expect: { value: { listed: true, content: 'long', viaLink: 'long', count: 4 } },
  },
  {
    name: 'create with a 256-byte name is ENAMETOOLONG',
    action: ({ fs, p }) => fs.writeFile(p('x'.repeat(256)), ''),
    expect: 'ENAMETOOLONG',
  },
  {
    name: 'mkdir with a 256-byte name is ENAMETOOLONG',
    action: ({ fs, p }) => fs.mkdir(p('x'.repeat(256))),
    expect: 'ENAMETOOLONG',
  },
  {
    name: 'symlink with a 256-byte name is ENAMETOOLONG',
    action: ({ fs, p }) => fs.symlink('target', p('x'.repeat(256))),
    expect: 'ENAMETOOLONG',
  },
  {
    name: 'mkfifo with a 256-byte name is ENAMETOOLONG',
    action: ({ py, p }) => py('os.mkfifo(args[0])', p('x'.repeat(256))),
    expect: 'ENAMETOOLONG',
  },
  {
    name: 'rename to a 256-byte name is ENAMETOOLONG',
    setup: [file('f', 'stays')],
    action: ({ fs, p }) => fs.rename(p('f'), p('x'.repeat(256))),
    expect: 'ENAMETOOLONG',
    check: async (t) => assert.equal(await t.read('f'), 'stays'),
  },
  {
    name: 'link to a 256-byte name is ENAMETOOLONG',
    setup: [file('f')],
    action: ({ fs, p }) => fs.link(p('f'), p('x'.repeat(256))),
    expect: 'ENAMETOOLONG',
  },
  {
    name: 'stat (lookup) of a 256-byte name is ENAMETOOLONG, not ENOENT',
    action: ({ fs, p }) => fs.stat(p('x'.repeat(256))),
    expect: 'ENAMETOOLONG',
  },
  {
    name: 'the limit counts bytes: 85 three-byte characters (255 bytes) are fine, 86 are ENAMETOOLONG',
    action: async ({ fs, p }) => {
      await fs.writeFile(p('☃'.repeat(85)), '');
      const listed = (await fs.readdir(p('.'))).includes('☃'.repeat(85));
      try {
        await fs.writeFile(p('☃'.repeat(86)), '');
        return { listed, longer: 'created' };
      } catch (error) {
        return { listed, longer: (error as { code?: string }).code };
      }
    },
    expect: { value: { listed: true, longer: 'ENAMETOOLONG' } },
  },
  {
    name: 'a path of 4096 bytes or more is ENAMETOOLONG',
    action: ({ fs, p }) => fs.stat(p('a/'.repeat(2100))),
    expect: 'ENAMETOOLONG',
  },
  {
    name: "any byte but '/' and NUL makes a name: spaces, newlines, tabs, backslashes, a leading dash, '...'",
    action: async ({ fs, p }) => {
      const names = ['with space', 'new\nline', 'tab\there', 'back\\slash', '-dash', '...', 'quote"\'', '*?[]', ' '];
      for (const name of names) await fs.writeFile(p(name), name);
      const listed = (await fs.readdir(p('.'))).sort();
      const contents = await Promise.all(names.map((name) => fs.readFile(p(name), 'utf8')));
      return { listed: listed.join('|') === [...names].sort().join('|'), contents: contents.every((content, i) => content === names[i]) };
    },
    expect: { value: { listed: true, contents: true } },
  },
];
