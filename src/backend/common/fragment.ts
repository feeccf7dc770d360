// What a backend's renderer makes of one service port, and the operations a sync is made of. A
// renderer turns one service port into a Fragment: items it adds to shared collections (nftables
// set and map elements, iptables rules in dispatch chains such as KUBE-SERVICES), objects it owns
// (per-service chains and sets), and shared objects it refers to (nftables shape chains).

export interface Fragment<O> {
  /** Items in shared collections, as flat triples: collection, key, value (undefined when none). */
  items: Array<string | undefined>;
  /** Objects owned by this service port. Several claiming one id: the smallest service key wins. */
  objects: O[];
  /** Shared objects this service port refers to: one exists while anything refers to it. */
  refs: string[];
}

export function emptyFragment<O>(): Fragment<O> {
  return { items: [], objects: [], refs: [] };
}

export type StoreOp<O> =
  | { kind: 'add-item'; collection: string; key: string; value: string | undefined }
  /** Same key, new value. */
  | { kind: 'replace-item'; collection: string; key: string; value: string | undefined; before: string | undefined }
  | { kind: 'delete-item'; collection: string; key: string; value: string | undefined }
  | { kind: 'add-object'; object: O }
  | { kind: 'replace-object'; object: O; before: O }
  /** `object` is the deleted object as it was. */
  | { kind: 'delete-object'; object: O }
  | { kind: 'add-ref'; name: string }
  | { kind: 'drop-ref'; name: string };

// Renderers build keys and values by concatenation, which V8 keeps as trees of string pieces
// several times the size of the text. Converting to a number makes V8 flatten the string in
// place, and the next scavenge drops the tree: items the store keeps for the life of the
// ruleset then cost their text, not their history.
export function flat(s: string): string {
  Number(s);
  return s;
}

export interface ObjectKind<O> {
  /** Unique id of an object (e.g. `chain:name`, `nat/KUBE-SVC-…`). */
  id(o: O): string;
  /** Whether two objects with the same id have the same content. */
  same(a: O, b: O): boolean;
}
