// Test program for common/maps (tests/test_maps.py): Rust enums holding a Box in one variant and
// an Rc in another (DWARF variant parts with discriminants), niche-optimised Options, a static.
use std::rc::Rc;
use std::cell::RefCell;

#[derive(Debug)]
pub struct Node { pub value: u64, pub next: Option<Box<Node>> }

#[derive(Debug)]
pub enum Holder {
    Empty,
    Boxed(Box<Node>),
    Shared(Rc<RefCell<Node>>),
    Pair(u32, Box<u64>),
}

pub struct Outer { pub id: u32, pub h: Holder, pub list: Vec<Holder>, pub name: String }

#[inline(never)]
#[no_mangle]
pub extern "C" fn heaplens_checkpoint() { std::hint::black_box(()); }

#[inline(never)]
fn inspect(a: &Holder, b: &Holder, o: &Outer) -> u64 {
    let boxed = Holder::Boxed(Box::new(Node { value: 9, next: None }));
    heaplens_checkpoint();
    let mut s = 0;
    for h in [a, b, &boxed, &o.h] {
        s += match h { Holder::Empty => 0, Holder::Boxed(n) => n.value, Holder::Shared(r) => r.borrow().value, Holder::Pair(x, y) => *x as u64 + **y };
    }
    s
}

static mut G_HOLDER: Option<Box<Node>> = None;

fn main() {
    let shared = Rc::new(RefCell::new(Node { value: 2, next: None }));
    let a = Holder::Boxed(Box::new(Node { value: 1, next: Some(Box::new(Node { value: 5, next: None })) }));
    let b = Holder::Shared(shared.clone());
    let o = Outer { id: 3, h: Holder::Pair(4, Box::new(7)), list: vec![Holder::Empty], name: String::from("o") };
    unsafe { G_HOLDER = Some(Box::new(Node { value: 11, next: None })); }
    let r = inspect(&a, &b, &o);
    println!("{} {}", r, Rc::strong_count(&shared));
}
