// Parser for the subset of nft rule syntax the renderer emits. Anything outside the
// subset is a ParseError: the tracer must refuse a rule rather than guess its meaning.
import type { ValueType } from './values.js';

export class ParseError extends Error {}

export type Token = { kind: 'word' | 'str' | 'punct'; text: string };

const TOKEN = /\s+|("(?:[^"\\]|\\.)*")|([{},])|("[^]*)|([^\s{},"]+)/y;
const PUNCT = new Set(['.', ':', '==', '!=', '&', '|', '^', '<', '>', '<=', '>=']);

export function tokenize(src: string): Token[] {
  const out: Token[] = [];
  TOKEN.lastIndex = 0;
  let m: RegExpExecArray | null;
  while (TOKEN.lastIndex < src.length && (m = TOKEN.exec(src))) {
    if (m[1]) out.push({ kind: 'str', text: m[1] });
    else if (m[2]) out.push({ kind: 'punct', text: m[2] });
    else if (m[3]) throw new ParseError('unterminated string');
    else if (m[4]) {
      let word = m[4];
      // `0: goto x` written without a space: split the colon unless the word is an IPv6 address.
      if (word.length > 1 && word.endsWith(':') && !word.slice(0, -1).includes(':')) {
        out.push({ kind: 'word', text: word.slice(0, -1) });
        word = ':';
      }
      out.push({ kind: PUNCT.has(word) ? 'punct' : 'word', text: word });
    }
  }
  return out;
}

export type Expr =
  | { k: 'field'; name: string; type: ValueType }
  | { k: 'numgen'; mod: number; offset: number }
  | { k: 'fib'; addr: 'saddr' | 'daddr'; type: ValueType }
  | { k: 'concat'; parts: Expr[] }
  | { k: 'binop'; op: '&' | '|' | '^'; left: Expr; right: bigint };

export type Verdict =
  | { k: 'accept' | 'drop' | 'reject' | 'return' | 'continue' }
  | { k: 'jump' | 'goto'; chain: string };

/** An anonymous set or map: each element is a list of key components, plus a value for maps. */
export interface AnonElement {
  key: string[];
  value?: string[];
  verdict?: Verdict;
}

export type SetRef = { ref: string } | { anon: AnonElement[] };

export type MatchOp = 'implicit' | '==' | '!=' | '<' | '>' | '<=' | '>=';

export type Stmt =
  | { k: 'match'; left: Expr; op: MatchOp; right: SetRef | { lit: string[] } }
  | { k: 'vmap'; key: Expr; map: SetRef }
  | { k: 'verdict'; v: Verdict }
  | { k: 'noop'; what: string }
  | { k: 'markset'; value: Expr | bigint }
  | { k: 'masquerade' }
  | { k: 'dnat'; addr?: string; port?: string; key?: Expr; map?: SetRef }
  | { k: 'setupdate'; set: string; key: Expr; timeout?: string };

const FIELD_TYPES: Record<string, ValueType> = {
  'ip saddr': 'ip4', 'ip daddr': 'ip4', 'ip protocol': 'proto',
  'ip6 saddr': 'ip6', 'ip6 daddr': 'ip6', 'ip6 nexthdr': 'proto',
  'meta l4proto': 'proto', 'meta mark': 'int', 'meta iifname': 'ifname',
  'meta nfproto': 'nfproto',
  'th dport': 'port', 'tcp dport': 'port', 'udp dport': 'port', 'sctp dport': 'port',
  'ct state': 'ctstate', 'ct status': 'ctstatus', 'ct mark': 'int',
};
/** Meta keys nft accepts without the `meta` keyword. */
const BARE_META = new Set(['mark', 'iifname', 'l4proto', 'nfproto']);

class Parser {
  private i = 0;
  constructor(private readonly toks: Token[]) {}

  peek(o = 0): string | undefined {
    return this.toks[this.i + o]?.text;
  }
  next(): string {
    const t = this.toks[this.i++];
    if (!t) throw new ParseError('unexpected end of rule');
    return t.text;
  }
  eat(text: string): boolean {
    if (this.peek() === text) { this.i++; return true; }
    return false;
  }
  expect(text: string): void {
    const t = this.next();
    if (t !== text) throw new ParseError(`expected '${text}', found '${t}'`);
  }
  done(): boolean {
    return this.i >= this.toks.length;
  }
  int(): number {
    const t = this.next();
    if (!/^(\d+|0x[0-9a-f]+)$/i.test(t)) throw new ParseError(`expected a number, found '${t}'`);
    return Number(t);
  }

  /** Starts of expressions that may open a statement. */
  startsExpr(): boolean {
    const t = this.peek();
    if (t === undefined) return false;
    if (['ip', 'ip6', 'meta', 'th', 'tcp', 'udp', 'sctp', 'ct', 'fib', 'numgen'].includes(t)) return true;
    return BARE_META.has(t);
  }

  primary(): Expr {
    const t = this.next();
    if (t === 'numgen') {
      const mode = this.next();
      if (mode !== 'random' && mode !== 'inc') throw new ParseError(`unknown numgen mode '${mode}'`);
      this.expect('mod');
      const mod = this.int();
      const offset = this.eat('offset') ? this.int() : 0;
      if (mod < 1) throw new ParseError('numgen mod must be positive');
      return { k: 'numgen', mod, offset };
    }
    if (t === 'fib') {
      const addr = this.next();
      if (addr !== 'saddr' && addr !== 'daddr') throw new ParseError(`unsupported fib input '${addr}'`);
      if (this.peek() === '.') throw new ParseError('fib with interface or mark inputs is not supported');
      const result = this.next();
      if (result !== 'type') throw new ParseError(`unsupported fib result '${result}'`);
      return { k: 'fib', addr, type: 'fibtype' };
    }
    let name = t;
    if (BARE_META.has(t)) name = `meta ${t}`;
    else name = `${t} ${this.next()}`;
    const type = FIELD_TYPES[name];
    if (!type) throw new ParseError(`unknown expression '${name}'`);
    return { k: 'field', name, type };
  }

  expr(): Expr {
    const parts: Expr[] = [this.binop()];
    while (this.peek() === '.') {
      this.i++;
      parts.push(this.binop());
    }
    return parts.length === 1 ? parts[0]! : { k: 'concat', parts };
  }

  binop(): Expr {
    const left = this.primary();
    const t = this.peek();
    const op = t === '&' || t === 'and' ? '&' : t === '|' || t === 'or' ? '|' : t === '^' || t === 'xor' ? '^' : null;
    if (!op) return left;
    this.i++;
    return { k: 'binop', op, left, right: BigInt(this.int()) };
  }

  verdict(): Verdict | null {
    const t = this.peek();
    if (t === 'accept' || t === 'drop' || t === 'return' || t === 'continue') {
      this.i++;
      return { k: t };
    }
    if (t === 'jump' || t === 'goto') {
      this.i++;
      return { k: t, chain: this.chainName() };
    }
    return null;
  }

  chainName(): string {
    const t = this.next();
    return t.startsWith('"') ? t.slice(1, -1) : t;
  }

  /** `{ a . b : v, ... }` after the opening brace. */
  anon(isMap: boolean): AnonElement[] {
    const out: AnonElement[] = [];
    while (!this.eat('}')) {
      const key = [this.next()];
      while (this.eat('.')) key.push(this.next());
      const el: AnonElement = { key };
      if (isMap) {
        this.expect(':');
        const v = this.verdict();
        if (v) el.verdict = v;
        else {
          el.value = [this.next()];
          while (this.eat('.')) el.value.push(this.next());
        }
      }
      out.push(el);
      if (!this.eat(',') && this.peek() !== '}') throw new ParseError(`unexpected '${this.peek() ?? 'end of rule'}' in set`);
    }
    return out;
  }

  setRef(isMap: boolean): SetRef {
    const t = this.next();
    if (t.startsWith('@')) return { ref: t.slice(1) };
    if (t === '{') return { anon: this.anon(isMap) };
    throw new ParseError(`expected a set, found '${t}'`);
  }

  /** Literal right-hand side: `a`, `a . b`, or the comma list nft accepts for flags. */
  literal(): string[] {
    const first = this.next();
    if (first === '{' || first === '}' || first === ',' || first === ':') throw new ParseError(`unexpected '${first}'`);
    const parts = [first];
    while (this.peek() === '.' || this.peek() === ',') parts.push(this.next(), this.next());
    return parts;
  }

  stmt(): Stmt {
    const t = this.peek()!;
    const v = this.verdict();
    if (v) return { k: 'verdict', v };
    if (this.startsExpr() && !(t === 'meta' && this.peek(2) === 'set') && !(BARE_META.has(t) && this.peek(1) === 'set')) {
      const left = this.expr();
      if (this.eat('vmap')) return { k: 'vmap', key: left, map: this.setRef(true) };
      let op: MatchOp = 'implicit';
      const o = this.peek();
      if (o === '==' || o === 'eq') { this.i++; op = '=='; }
      else if (o === '!=' || o === 'ne') { this.i++; op = '!='; }
      else if (o === '<' || o === '>' || o === '<=' || o === '>=') { this.i++; op = o; }
      const r = this.peek();
      if (r !== undefined && (r.startsWith('@') || r === '{')) return { k: 'match', left, op, right: this.setRef(false) };
      return { k: 'match', left, op, right: { lit: this.literal() } };
    }
    this.i++;
    switch (t) {
      case 'counter':
        // `counter packets N bytes M` as listed by nft.
        if (this.peek() === 'packets') { this.i++; this.int(); this.expect('bytes'); this.int(); }
        return { k: 'noop', what: 'counter' };
      case 'comment':
        this.next();
        return { k: 'noop', what: 'comment' };
      case 'log':
        while (this.peek() === 'prefix' || this.peek() === 'level') { this.i++; this.next(); }
        return { k: 'noop', what: 'log' };
      case 'reject':
        if (this.eat('with')) {
          const kind = this.next();
          if (kind === 'tcp') this.expect('reset');
          else if (['icmp', 'icmpv6', 'icmpx'].includes(kind)) { this.eat('type'); this.next(); }
          else throw new ParseError(`unknown reject type '${kind}'`);
        }
        return { k: 'verdict', v: { k: 'reject' } };
      case 'masquerade':
        while (this.peek() !== undefined && /^(random|fully-random|persistent)(,|$)/.test(this.peek()!)) {
          this.i++;
          if (this.eat(',')) this.next();
        }
        return { k: 'masquerade' };
      case 'meta':
      case 'mark': {
        if (t === 'meta') this.expect('mark');
        this.expect('set');
        if (this.startsExpr()) return { k: 'markset', value: this.binop() };
        return { k: 'markset', value: BigInt(this.int()) };
      }
      case 'dnat': {
        if (this.peek() === 'ip' || this.peek() === 'ip6') this.i++;
        // nft 1.0 form `dnat ip addr . port to ... map ...`.
        if (this.eat('addr')) { this.expect('.'); this.expect('port'); }
        this.expect('to');
        if (this.startsExpr()) {
          const key = this.expr();
          this.expect('map');
          return { k: 'dnat', key, map: this.setRef(true) };
        }
        const target = this.next();
        const m = /^\[(.+)\]:(\d+)$/.exec(target) ?? /^([^:]+):(\d+)$/.exec(target);
        if (m) return { k: 'dnat', addr: m[1]!, port: m[2]! };
        if (this.eat(':')) return { k: 'dnat', addr: target, port: this.next() };
        return { k: 'dnat', addr: target.replace(/^\[|\]$/g, '') };
      }
      case 'update':
      case 'add': {
        const set = this.next();
        if (!set.startsWith('@')) throw new ParseError(`expected a set after '${t}'`);
        this.expect('{');
        const key = this.expr();
        let timeout: string | undefined;
        if (this.eat('timeout')) timeout = this.next();
        this.expect('}');
        return { k: 'setupdate', set: set.slice(1), key, ...(timeout ? { timeout } : {}) };
      }
      default:
        throw new ParseError(`unknown statement '${t}'`);
    }
  }
}

/** Parses one rule into statements; throws ParseError naming what it cannot read. */
export function parseRule(rule: string): Stmt[] {
  const p = new Parser(tokenize(rule));
  const out: Stmt[] = [];
  while (!p.done()) out.push(p.stmt());
  return out;
}

/** Parses a set/map element as written in a ruleset: `k1 . k2 [: value]`, with optional attributes. */
export function parseElement(text: string): AnonElement {
  const toks = tokenize(text);
  const p = new Parser([...toks.filter((_, i) => i < attrStart(toks)), { kind: 'punct', text: '}' }]);
  const isMap = toks.some((t) => t.text === ':' && t.kind === 'punct');
  const els = p.anon(isMap);
  if (els.length !== 1) throw new ParseError(`cannot read element '${text}'`);
  return els[0]!;
}

/** Index where element attributes (`timeout 3h`, `expires ...`, `comment "..."`, counters) begin. */
function attrStart(toks: Token[]): number {
  for (let i = 1; i < toks.length; i++) {
    if (['timeout', 'expires', 'comment', 'counter'].includes(toks[i]!.text) && toks[i - 1]!.text !== '.' && toks[i - 1]!.text !== ':') {
      // Attributes come after the key (and after the value of a map element).
      return i;
    }
  }
  return toks.length;
}
