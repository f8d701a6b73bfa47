// rust_leaks.rs - Rust leaks heaplens must find (Rust's default allocator is glibc malloc).
//   * an Rc cycle: two nodes pointing at each other through RefCell<Option<Rc<..>>>; both Rc
//     handles dropped, so the two RcBox chunks are unreachable (one definitely lost, one
//     indirectly);
//   * Box::leak of a 100-byte buffer whose &'static reference is then forgotten;
//   * and live data that must NOT be reported: a Vec<Box<Item>>, an Rc shared by two holders,
//     an enum with a Box in one variant, all reachable from a static and from main's locals.
// Stops in heaplens_checkpoint(). Build: rustc -g -C opt-level=0 rust_leaks.rs
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Mutex;

struct Node { name: String, next: RefCell<Option<Rc<Node>>> }
struct Item { id: u64, label: Box<[u8; 40]> }
enum Shape { Empty, Boxed(Box<Item>), Shared(Rc<Item>) }

static KEEP: Mutex<Vec<usize>> = Mutex::new(Vec::new());

#[no_mangle]
#[inline(never)]
pub extern "C" fn heaplens_checkpoint() { unsafe { std::arch::asm!("", options(nostack)); } }

#[inline(never)]
fn make_cycle() -> usize {
    let a = Rc::new(Node { name: "a".to_string(), next: RefCell::new(None) });
    let b = Rc::new(Node { name: "b".to_string(), next: RefCell::new(Some(a.clone())) });
    *a.next.borrow_mut() = Some(b.clone());
    Rc::as_ptr(&a) as usize                     // both handles dropped here: the cycle leaks
}

#[inline(never)]
fn leak_box() -> usize {
    let r: &'static mut [u8; 100] = Box::leak(Box::new([7u8; 100]));
    r.as_ptr() as usize                          // the only reference is forgotten
}

fn main() {
    let items: Vec<Box<Item>> = (0..10).map(|i| Box::new(Item { id: i, label: Box::new([1; 40]) })).collect();
    let shared = Rc::new(Item { id: 99, label: Box::new([2; 40]) });
    let shapes = vec![Shape::Empty, Shape::Boxed(Box::new(Item { id: 5, label: Box::new([3; 40]) })),
                      Shape::Shared(shared.clone())];
    let cycle = make_cycle();
    let leaked = leak_box();
    KEEP.lock().unwrap().push(items.len());
    if let Ok(path) = std::env::var("HEAPLENS_TRUTH") {
        let _ = std::fs::write(path, format!("expect rc-cycle {:#x}\nexpect box-leak {:#x}\n", cycle, leaked));
    }
    heaplens_checkpoint();
    let n: u64 = items.iter().map(|b| b.id + b.label[0] as u64).sum::<u64>() + shared.id
        + shapes.iter().map(|s| match s { Shape::Empty => 0, Shape::Boxed(b) => b.id, Shape::Shared(r) => r.id }).sum::<u64>();
    println!("{}", n);
}
