// Test program for common/maps (tests/test_maps.py): a C++ class hierarchy (vptr, base class
// subobjects, pointer fields in bases and derived classes, references, a namespace, a template,
// a static member) whose pointer layouts are compared with gdb's.
#include <cstdio>
#include <cstdlib>

namespace zoo {

struct Tag {
    const char *label;
};

class Animal {
  public:
    explicit Animal(const char *n) : name(n), next(nullptr) {}
    virtual ~Animal() {}
    virtual int legs() const { return 4; }
    const char *name;
    Animal *next;
    static Animal *registry;
};

Animal *Animal::registry = nullptr;

class Pet {
  public:
    Tag *tag = nullptr;
    virtual void pat() {}
    virtual ~Pet() {}
};

class Dog : public Animal, public Pet {
  public:
    Dog(const char *n, Animal &buddy) : Animal(n), friend_(buddy), bones(new int[3]) {}
    int legs() const override { return 4; }
    Animal &friend_;
    int *bones;
    char flags[5];
    Dog *pack[2] = {nullptr, nullptr};
};

template <typename T>
struct Box {
    T *item;
    unsigned size;
    Box<T> *nested;
};

union Slot {
    Animal *animal;
    long raw;
};

struct Kennel {
    Box<Dog> dogs;
    Box<Animal> animals;
    Slot slots[2];
    Animal &(*pick)(Kennel &);
};

}  // namespace zoo

zoo::Kennel *g_kennel;
zoo::Dog *g_dog;

extern "C" __attribute__((noinline)) void heaplens_checkpoint(void) { __asm__ volatile("" ::: "memory"); }

__attribute__((noinline)) int visit(zoo::Dog *d, zoo::Animal &a) {
    zoo::Animal *base = d;
    zoo::Pet *pet = d;
    heaplens_checkpoint();
    return base->legs() + (pet->tag ? 1 : 0) + a.legs();
}

int main() {
    zoo::Animal *cat = new zoo::Animal("cat");
    g_dog = new zoo::Dog("rex", *cat);
    g_dog->tag = new zoo::Tag{"blue"};
    zoo::Animal::registry = g_dog;
    g_kennel = new zoo::Kennel();
    g_kennel->dogs.item = g_dog;
    g_kennel->animals.item = cat;
    int r = visit(g_dog, *cat);
    std::printf("%d\n", r);
    return 0;
}
